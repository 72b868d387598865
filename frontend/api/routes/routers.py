"""Routers: the distributed router of a network, one per network, which floating IPs go through."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import func, select

from ...auth import Role
from ...db.engine import lock
from ...db.models import FloatingIp, Network, Port, Router
from ...errors import Conflict, Invalid
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned
from ..schemas import V1, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["routers"])


class RouterCreate(Input):
    name: Name
    network: Ref
    snat: bool = True


class RouterUpdate(Input):
    name: Name | None = None
    snat: bool | None = None


class RouterView(ResourceView):
    name: str
    network_id: str
    snat: bool


@router.post("/routers", status_code=status.HTTP_201_CREATED, response_model=RouterView,
             summary="Create the router of a network")
def create_router(body: RouterCreate, caller: CallerDep, frontend: FrontendDep) -> RouterView:
    caller.require(Role.member, "creating a router")
    with frontend.db.transaction() as session:
        network = find(session, Network, body.network, caller, "network", "network")
        if network.external:
            raise Invalid(f"network {network.name!r} is external; routers connect tenant networks to it", "network")
        lock(session, Network, network.id)  # one router per network, even under concurrent creates
        if session.execute(select(Router.id).where(Router.network_id == network.id)).first() is not None:
            raise Conflict(f"network {network.name!r} has a router already", "network")
        row = Router(org_id=caller.org_id, name=body.name, network_id=network.id, snat=body.snat, status="active")
        session.add(row)
        session.flush()
        return RouterView.model_validate(row)


@router.get("/routers", response_model=Items[RouterView], summary="List your routers")
def list_routers(caller: CallerDep, frontend: FrontendDep) -> Items[RouterView]:
    with frontend.db.read() as session:
        rows = session.execute(owned(Router, caller).order_by(Router.name, Router.id)).scalars()
        return Items(items=[RouterView.model_validate(r) for r in rows])


@router.get("/routers/{router_ref}", response_model=RouterView, summary="Show a router by id or name")
def show_router(router_ref: Ref, caller: CallerDep, frontend: FrontendDep) -> RouterView:
    with frontend.db.read() as session:
        return RouterView.model_validate(find(session, Router, router_ref, caller, "router"))


@router.patch("/routers/{router_ref}", response_model=RouterView, summary="Rename a router or switch its SNAT")
def update_router(router_ref: Ref, body: RouterUpdate, caller: CallerDep, frontend: FrontendDep) -> RouterView:
    caller.require(Role.member, "changing a router")
    with frontend.db.transaction() as session:
        row = find(session, Router, router_ref, caller, "router")
        for field, value in body.model_dump(exclude_none=True).items():
            setattr(row, field, value)
        session.flush()
        return RouterView.model_validate(row)


@router.delete("/routers/{router_ref}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a router no floating IP goes through")
def delete_router(router_ref: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "deleting a router")
    with frontend.db.transaction() as session:
        row = find(session, Router, router_ref, caller, "router")
        lock(session, Network, row.network_id)  # no floating IP may be associated while we look
        fips = session.execute(select(func.count()).select_from(FloatingIp).join(Port, Port.id == FloatingIp.port_id)
                               .where(Port.network_id == row.network_id)).scalar()
        if fips:
            raise Conflict(f"{fips} floating IPs are associated with ports of this router's network; "
                           "disassociate them first")
        session.delete(row)
