"""Security groups: the firewall rules of ports.  What no rule allows is dropped.

A new group allows all egress, like the organization's ``default`` group (which ports get when
they name none, made on first need); that one also allows ingress from its own members.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from fastapi import APIRouter, status
from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ... import ipam, netstate, quotas
from ...auth import Caller, Role
from ...db.models import SecurityGroup, SecurityGroupRule, port_security_groups
from ...errors import Conflict, NotFound
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned, unique_name
from ..schemas import V1, Input, Items, Name, Ref, ResourceView, Text

router = APIRouter(prefix=V1, tags=["security-groups"])

ANYWHERE = "0.0.0.0/0"
#: the rules one group may hold: every one is a line in the chains of each port in the group
MAX_RULES_PER_GROUP = 200


def _network(text: str) -> str:
    try:
        return str(ipaddress.IPv4Network(text))
    except ValueError as e:
        raise ValueError(f"{text!r} is not an IPv4 network (e.g. 192.0.2.0/24): {e}") from None


class GroupCreate(Input):
    name: Name
    description: Text = Field(default="", max_length=255)


class GroupUpdate(Input):
    name: Name | None = None
    description: Text | None = Field(default=None, max_length=255)


#: protocol numbers the API names (a rule given by number is stored by name)
_NAMED = {1: "icmp", 6: "tcp", 17: "udp"}


def _protocol(value: object) -> str:
    """A protocol's name, or its number as text (a number the API names becomes that name)."""
    if value in ("tcp", "udp", "icmp", "any"):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return _NAMED.get(value, str(value))
    raise ValueError("must be tcp, udp, icmp, any, or an IP protocol number from 0 to 255")


class RuleCreate(Input):
    direction: Literal["ingress", "egress"]
    protocol: Annotated[str, BeforeValidator(_protocol)] = Field(
        default="any", description="tcp, udp, icmp, any, or an IP protocol number (0-255)",
        json_schema_extra={"anyOf": [{"enum": ["tcp", "udp", "icmp", "any"]}, {"type": "integer", "minimum": 0,
                                                                              "maximum": 255}]})
    port_min: int | None = Field(default=None, ge=1, le=65535, description="tcp and udp only")
    port_max: int | None = Field(default=None, ge=1, le=65535, description="default: port_min")
    icmp_type: int | None = Field(default=None, ge=0, le=255, description="icmp only; default: every type")
    icmp_code: int | None = Field(default=None, ge=0, le=255, description="icmp only, with icmp_type; default: every code")
    remote_cidr: Annotated[str, AfterValidator(_network)] | None = Field(
        default=None, description=f"where the traffic comes from or goes to; default {ANYWHERE}")
    remote_group: Ref | None = Field(default=None, description="instead of remote_cidr: the members of this group")

    @field_validator("icmp_type", "icmp_code")
    @classmethod
    def _icmp_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("protocol") != "icmp":
            raise ValueError("ICMP types and codes can only be given for icmp")
        if info.field_name == "icmp_code" and value is not None and info.data.get("icmp_type") is None:
            raise ValueError("a code needs its icmp_type")
        return value

    @field_validator("port_min", "port_max")
    @classmethod
    def _ports_need_tcp_or_udp(cls, port: int | None, info: ValidationInfo) -> int | None:
        if port is not None and info.data.get("protocol") not in ("tcp", "udp"):
            raise ValueError("ports can only be given for tcp and udp")
        return port

    @field_validator("port_max")
    @classmethod
    def _range(cls, port: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("port_min")
        if port is not None and low is not None and port < low:
            raise ValueError(f"must not be below port_min ({low})")
        return port

    @field_validator("remote_group")
    @classmethod
    def _one_remote(cls, group: str | None, info: ValidationInfo) -> str | None:
        if group is not None and info.data.get("remote_cidr") is not None:
            raise ValueError("give remote_cidr or remote_group, not both")
        return group

    @model_validator(mode="after")
    def _single_port(self) -> RuleCreate:
        self.port_min = self.port_min or self.port_max
        self.port_max = self.port_max or self.port_min
        return self


class RuleView(ResourceView):
    security_group_id: str
    direction: str
    protocol: str
    port_min: int | None
    port_max: int | None
    icmp_type: int | None
    icmp_code: int | None
    remote_cidr: str | None
    remote_group_id: str | None


class GroupView(ResourceView):
    name: str
    description: str
    rules: list[RuleView]

    @field_validator("rules", mode="before")
    @classmethod
    def _ordered(cls, rules: list[SecurityGroupRule]) -> list[SecurityGroupRule]:
        return sorted(rules, key=lambda r: (r.created_at, r.id))


def push_rules(frontend: FrontendDep, session: Session, caller: Caller, group_id: str) -> str | None:
    """A ``network.sync`` task (to start once committed) that takes the group's new rules to the
    hosts of its ports, and only to them; None if no port of it is on a host."""
    networks, hosts = netstate.group_audience(session, rules_of=[group_id])
    if not hosts:
        return None
    task = frontend.tasks.create(session, "network.sync", caller.org_id, caller.user_id, "security_group", group_id,
                                 {"networks": networks, "only": hosts})
    return task.id


@router.post("/security-groups", status_code=status.HTTP_201_CREATED, response_model=GroupView,
             summary="Create a security group (it allows all egress until you change its rules)")
def create_group(body: GroupCreate, caller: CallerDep, frontend: FrontendDep) -> GroupView:
    caller.require(Role.member, "creating a security group")
    with frontend.db.transaction() as session:
        quotas.check(session, caller.org_id, security_groups=1)
        unique_name(session, SecurityGroup, body.name, "security group", caller.org_id)
        group = SecurityGroup(org_id=caller.org_id, name=body.name, description=body.description, status="active",
                              rules=[ipam.egress_anywhere(caller.org_id)])
        session.add(group)
        session.flush()
        return GroupView.model_validate(group)


@router.get("/security-groups", response_model=Items[GroupView], summary="List your security groups")
def list_groups(caller: CallerDep, frontend: FrontendDep) -> Items[GroupView]:
    with frontend.db.read() as session:
        rows = session.execute(owned(SecurityGroup, caller).order_by(SecurityGroup.name)).scalars()
        return Items(items=[GroupView.model_validate(g) for g in rows])


@router.get("/security-groups/{group}", response_model=GroupView, summary="Show a security group by id or name")
def show_group(group: Ref, caller: CallerDep, frontend: FrontendDep) -> GroupView:
    with frontend.db.read() as session:
        return GroupView.model_validate(find(session, SecurityGroup, group, caller, "security group"))


@router.patch("/security-groups/{group}", response_model=GroupView,
              summary="Rename a security group or change its description")
def update_group(group: Ref, body: GroupUpdate, caller: CallerDep, frontend: FrontendDep) -> GroupView:
    caller.require(Role.member, "changing a security group")
    with frontend.db.transaction() as session:
        row = find(session, SecurityGroup, group, caller, "security group")
        if body.name is not None and body.name != row.name:
            unique_name(session, SecurityGroup, body.name, "security group", caller.org_id)
            row.name = body.name
        if body.description is not None:
            row.description = body.description
        session.flush()
        return GroupView.model_validate(row)


@router.delete("/security-groups/{group}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a security group no port uses and no other group's rule names")
def delete_group(group: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "deleting a security group")
    with frontend.db.transaction() as session:
        row = find(session, SecurityGroup, group, caller, "security group")
        ports = session.execute(select(func.count()).select_from(port_security_groups)
                                .where(port_security_groups.c.security_group_id == row.id)).scalar()
        if ports:
            raise Conflict(f"security group {row.name!r} is used by {ports} ports")
        others = session.execute(
            select(SecurityGroup.name).join(SecurityGroupRule, SecurityGroupRule.security_group_id == SecurityGroup.id)
            .where(SecurityGroupRule.remote_group_id == row.id, SecurityGroup.id != row.id).distinct()).scalars().all()
        if others:
            raise Conflict(f"rules of security groups {', '.join(sorted(others))} name {row.name!r} as their remote")
        session.delete(row)


@router.post("/security-groups/{group}/rules", status_code=status.HTTP_201_CREATED, response_model=RuleView,
             summary="Add a rule to a security group",
             description="The hosts of the group's ports get the new rules through a network.sync task (see "
                         "GET /v1/tasks); an established flow the rules no longer allow ends there.")
def create_rule(group: Ref, body: RuleCreate, caller: CallerDep, frontend: FrontendDep) -> RuleView:
    caller.require(Role.member, "changing a security group")
    with frontend.db.transaction() as session:
        row = find(session, SecurityGroup, group, caller, "security group")
        remote = find(session, SecurityGroup, body.remote_group, caller, "security group", "remote_group") \
            if body.remote_group is not None else None
        rule = SecurityGroupRule(org_id=caller.org_id, status="active", direction=body.direction,
                                 protocol=str(body.protocol), port_min=body.port_min, port_max=body.port_max,
                                 icmp_type=body.icmp_type, icmp_code=body.icmp_code,
                                 remote_cidr=None if remote else (body.remote_cidr or ANYWHERE),
                                 remote_group_id=remote.id if remote else None)
        fields = ("direction", "protocol", "port_min", "port_max", "icmp_type", "icmp_code", "remote_cidr",
                  "remote_group_id")
        if any(all(getattr(r, f) == getattr(rule, f) for f in fields) for r in row.rules):
            raise Conflict(f"security group {row.name!r} has this rule already")
        if len(row.rules) >= MAX_RULES_PER_GROUP:
            raise Conflict(f"security group {row.name!r} holds {len(row.rules)} rules, the most a group may hold")
        row.rules.append(rule)
        session.flush()
        task = push_rules(frontend, session, caller, row.id)
        view = RuleView.model_validate(rule)
    if task is not None:
        frontend.tasks.start(task)
    return view


@router.delete("/security-groups/{group}/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a rule from a security group",
               description="The hosts of the group's ports drop the rule through a network.sync task (see "
                           "GET /v1/tasks), and end the established flows it allowed.")
def delete_rule(group: Ref, rule_id: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "changing a security group")
    with frontend.db.transaction() as session:
        row = find(session, SecurityGroup, group, caller, "security group")
        rule = next((r for r in row.rules if r.id == rule_id), None)
        if rule is None:
            raise NotFound("rule", rule_id)
        row.rules.remove(rule)
        session.flush()
        task = push_rules(frontend, session, caller, row.id)
    if task is not None:
        frontend.tasks.start(task)
