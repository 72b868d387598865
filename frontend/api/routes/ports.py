"""Ports: an address (IP and MAC) on a subnet, with security groups, for an instance to use.

Ports made here outlive the instances they are bound to; those an instance's create call
makes (``api.nics.allocate_instance_ports``) are deleted with it.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import Field, field_validator, model_validator
from sqlalchemy import update
from sqlalchemy.orm import Session, selectinload

from ... import ipam, netstate
from ...auth import Caller, Role
from ...db.models import FloatingIp, Instance, Network, Port, SecurityGroup
from ...errors import Conflict
from ..allorgs import AllOrgsDep
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned
from ..nics import resolve_security_groups, resolve_subnet
from ..refusals import refusals
from ..schemas import V1, IPv4, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["ports"])

class PortCreate(Input):
    name: Name | None = None
    network: Ref | None = Field(default=None, description="a network: the port goes on its first subnet")
    subnet: Ref | None = None
    ip: IPv4 | None = Field(default=None, description="default: the next free address")
    security_groups: list[Ref] | None = Field(default=None, max_length=16,
                                              description=f"default: the {ipam.DEFAULT_GROUP!r} group")

    @model_validator(mode="after")
    def _one_place(self) -> PortCreate:
        if (self.network is None) == (self.subnet is None):
            raise ValueError("give exactly one of network or subnet")
        return self


class PortUpdate(Input):
    name: Name | None = None
    security_groups: list[Ref] | None = Field(default=None, max_length=16, description="replaces the port's groups")


class PortView(ResourceView):
    name: str
    network_id: str
    subnet_id: str
    mac_address: str
    ip_address: str
    instance_id: str | None
    auto_delete: bool
    security_groups: list[str]

    @field_validator("security_groups", mode="before")
    @classmethod
    def _ids(cls, groups: list[SecurityGroup | str]) -> list[str]:
        return sorted(g if isinstance(g, str) else g.id for g in groups)


@router.post("/ports", status_code=status.HTTP_201_CREATED, response_model=PortView,
             summary="Create a port on a network or subnet")
def create_port(body: PortCreate, caller: CallerDep, frontend: FrontendDep) -> PortView:
    caller.require(Role.member, "creating a port")
    with frontend.db.transaction() as session:
        subnet = resolve_subnet(session, caller, body.network, body.subnet)
        groups = resolve_security_groups(session, caller, body.security_groups)
        port = ipam.create_port(session, caller.org_id, subnet, groups, ip=body.ip, name=body.name or "")
        return PortView.model_validate(port)


@router.get("/ports", response_model=Items[PortView],
            summary="List your ports, or those of one network or instance", responses=refusals(404))
def list_ports(caller: CallerDep, frontend: FrontendDep, all_orgs: AllOrgsDep, network: Ref | None = None,
               instance: Ref | None = None) -> Items[PortView]:
    with frontend.db.read() as session:
        query = owned(Port, caller, all_orgs=all_orgs).options(selectinload(Port.security_groups))
        if network is not None:
            query = query.where(Port.network_id == find(session, Network, network, caller, "network", "network",
                                                             all_orgs=all_orgs).id)
        if instance is not None:
            query = query.where(Port.instance_id == find(session, Instance, instance, caller, "instance",
                                                         "instance", all_orgs=all_orgs).id)
        rows = session.execute(query.order_by(Port.created_at, Port.id)).scalars()
        return Items(items=[PortView.model_validate(p) for p in rows])


@router.get("/ports/{port}", response_model=PortView, summary="Show a port by id or name")
def show_port(port: Ref, caller: CallerDep, frontend: FrontendDep) -> PortView:
    with frontend.db.read() as session:
        return PortView.model_validate(find(session, Port, port, caller, "port"))


@router.patch("/ports/{port}", response_model=PortView, summary="Rename a port or replace its security groups")
def update_port(port: Ref, body: PortUpdate, caller: CallerDep, frontend: FrontendDep) -> PortView:
    caller.require(Role.member, "changing a port")
    with frontend.db.transaction() as session:
        row = find(session, Port, port, caller, "port")
        if body.name is not None:
            row.name = body.name
        task = None
        if body.security_groups is not None:
            before = {g.id for g in row.security_groups}
            row.security_groups = resolve_security_groups(session, caller, body.security_groups)
            session.flush()
            task = _push_groups(frontend, session, caller, row, before | {g.id for g in row.security_groups})
        session.flush()
        view = PortView.model_validate(row)
    if task is not None:
        frontend.tasks.start(task)
    return view


def _push_groups(frontend: FrontendDep, session: Session, caller: Caller, port: Port, groups: set[str]) -> str | None:
    """A ``network.sync`` task (to start once committed) for a port whose groups changed: its own
    host rebuilds its firewall, and the hosts of ports whose rules name its groups as remote
    update those groups' members; None if none of them is on a host."""
    networks, hosts = netstate.group_audience(session, members_of=groups)
    own = netstate.port_host(session, port.id)
    if own is not None:
        networks, hosts = sorted({*networks, port.network_id}), sorted({*hosts, own})
    if not hosts:
        return None
    task = frontend.tasks.create(session, "network.sync", caller.org_id, caller.user_id, "port", port.id,
                                 {"networks": networks, "only": hosts})
    return task.id


@router.delete("/ports/{port}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a port no instance uses (its floating IP is disassociated)")
def delete_port(port: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "deleting a port")
    with frontend.db.transaction() as session:
        row = find(session, Port, port, caller, "port")
        session.refresh(row, with_for_update=True)  # an instance launch may be binding it right now
        if row.instance_id is not None:
            raise Conflict(f"port {port!r} is bound to instance {row.instance_id}; delete the instance first")
        session.execute(update(FloatingIp).where(FloatingIp.port_id == row.id).values(port_id=None))
        session.delete(row)
