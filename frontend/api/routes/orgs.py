"""Organizations (tenants) and their quotas.  Admins manage them; everyone sees their own."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import Field
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ...auth import Role
from ...bootstrap import ADMIN_ORG
from ...db.models import (Event, FloatingIp, Image, Instance, Keypair, Network, Organization, Port, Router,
                          SecurityGroup, SecurityGroupRule, ServerGroup, Snapshot, Subnet, Task, TaskStep, Token, User,
                          Volume)
from ...errors import Conflict
from ...quotas import QUOTAS, usage
from ..deps import CallerDep, FrontendDep
from ..lookup import find_org, unique_name
from ..schemas import V1, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["organizations"])

#: what an organization must have deleted before it can go (its default security group aside)
_CONTENTS = ((Instance, "instances"), (Snapshot, "snapshots"), (Volume, "volumes"), (FloatingIp, "floating IPs"), (Port, "ports"),
             (Router, "routers"), (Subnet, "subnets"), (Network, "networks"), (Image, "images"),
             (Keypair, "keypairs"), (ServerGroup, "server groups"), (User, "users"))

Quota = Field(default=None, ge=0, le=10_000_000, description="None: unlimited")


class Quotas(Input):
    instances: int | None = Quota
    vcpus: int | None = Quota
    memory_mb: int | None = Quota
    volumes: int | None = Quota
    volume_gb: int | None = Quota
    networks: int | None = Quota
    floating_ips: int | None = Quota
    security_groups: int | None = Quota
    snapshots: int | None = Quota
    snapshot_gb: int | None = Quota


class OrgCreate(Input):
    name: Name
    quotas: Quotas = Field(default_factory=Quotas)


class OrgUpdate(Input):
    quotas: Quotas | None = None
    status: str | None = Field(default=None, pattern="^(active|disabled)$")


class OrgView(ResourceView):
    name: str
    quotas: dict[str, int | None]
    usage: dict[str, int]


def _view(session: Session, org: Organization) -> OrgView:
    return OrgView(id=org.id, org_id=org.id, status=org.status, created_at=org.created_at, updated_at=org.updated_at,
                   name=org.name, quotas={q: getattr(org, f"quota_{q}") for q in QUOTAS},
                   usage={q: usage(session, org.id, q) for q in QUOTAS})


def _set_quotas(org: Organization, quotas: Quotas) -> None:
    for name in quotas.model_fields_set:
        setattr(org, f"quota_{name}", getattr(quotas, name))


@router.post("/orgs", status_code=status.HTTP_201_CREATED, response_model=OrgView, summary="Create an organization")
def create_org(body: OrgCreate, caller: CallerDep, frontend: FrontendDep) -> OrgView:
    caller.require(Role.admin, "creating an organization")
    with frontend.db.transaction() as session:
        unique_name(session, Organization, body.name, "organization")
        org = Organization(name=body.name, status="active")
        _set_quotas(org, body.quotas)
        session.add(org)
        session.flush()
        return _view(session, org)


@router.get("/orgs", response_model=Items[OrgView], summary="List organizations (admins: all; others: their own)")
def list_orgs(caller: CallerDep, frontend: FrontendDep) -> Items[OrgView]:
    with frontend.db.read() as session:
        query = select(Organization).order_by(Organization.name)
        if not caller.is_admin:
            query = query.where(Organization.id == caller.org_id)
        return Items(items=[_view(session, o) for o in session.execute(query).scalars()])


@router.get("/orgs/{org_id}", response_model=OrgView, summary="Show an organization (by id or name), its quotas and usage")
def show_org(org_id: Ref, caller: CallerDep, frontend: FrontendDep) -> OrgView:
    with frontend.db.read() as session:
        return _view(session, find_org(session, caller, org_id))


@router.patch("/orgs/{org_id}", response_model=OrgView, summary="Change quotas or disable an organization")
def update_org(org_id: Ref, body: OrgUpdate, caller: CallerDep, frontend: FrontendDep) -> OrgView:
    with frontend.db.transaction() as session:
        org = find_org(session, caller, org_id)
        caller.require(Role.admin, "changing an organization")
        if body.status is not None:
            if org.name == ADMIN_ORG and body.status != "active":
                raise Conflict("the admin organization cannot be disabled", "status")
            org.status = body.status
        if body.quotas is not None:
            _set_quotas(org, body.quotas)
        session.flush()
        return _view(session, org)


@router.delete("/orgs/{org_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an empty organization")
def delete_org(org_id: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    with frontend.db.transaction() as session:
        org = find_org(session, caller, org_id)
        caller.require(Role.admin, "deleting an organization")
        if org.name == ADMIN_ORG:
            raise Conflict("the admin organization cannot be deleted")
        for model, what in _CONTENTS:
            count = session.execute(select(func.count()).select_from(model).where(model.org_id == org.id)).scalar()
            if count:
                raise Conflict(f"the organization still has {count} {what}; delete them first")
        # Its history goes with it: nothing else may point at a deleted organization.
        session.execute(delete(TaskStep).where(TaskStep.task_id.in_(select(Task.id).where(Task.org_id == org.id))))
        for history in (Task, Event, Token):
            session.execute(delete(history).where(history.org_id == org.id))
        session.execute(delete(SecurityGroupRule).where(SecurityGroupRule.org_id == org.id))
        session.execute(delete(SecurityGroup).where(SecurityGroup.org_id == org.id))
        session.delete(org)
