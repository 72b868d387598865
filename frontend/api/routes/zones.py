"""Availability zones: hypervisors declare theirs; admins may also create them ahead."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import func, select

from ...auth import Role
from ...db.models import Hypervisor, Zone
from ...errors import Conflict
from ..deps import CallerDep, FrontendDep
from ..lookup import find_zone
from ..schemas import V1, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["zones"])


class ZoneCreate(Input):
    name: Name


class ZoneView(ResourceView):
    name: str


@router.post("/zones", status_code=status.HTTP_201_CREATED, response_model=ZoneView, summary="Create a zone")
def create_zone(body: ZoneCreate, caller: CallerDep, frontend: FrontendDep) -> Zone:
    caller.require(Role.admin, "creating a zone")
    with frontend.db.transaction() as session:
        if session.execute(select(Zone.id).where(Zone.name == body.name)).first() is not None:
            raise Conflict(f"a zone named {body.name!r} exists already", "name")
        zone = Zone(name=body.name, org_id=caller.org_id, status="active")
        session.add(zone)
        session.flush()
        return zone


@router.get("/zones", response_model=Items[ZoneView], summary="List zones (every user may, to pick one)")
def list_zones(caller: CallerDep, frontend: FrontendDep) -> Items[ZoneView]:
    with frontend.db.read() as session:
        return Items(items=[ZoneView.model_validate(z)
                            for z in session.execute(select(Zone).order_by(Zone.name)).scalars()])


@router.delete("/zones/{zone_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an empty zone")
def delete_zone(zone_id: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.admin, "deleting a zone")
    with frontend.db.transaction() as session:
        zone = find_zone(session, zone_id, field=None)
        hosts = session.execute(select(func.count()).where(Hypervisor.zone_id == zone.id)).scalar()
        if hosts:
            raise Conflict(f"{hosts} hypervisors are in this zone")
        session.delete(zone)
