"""Routers: the distributed router of a network, one per network, which floating IPs go through.

A router is on every hypervisor that hosts a port of its network: creating, changing or
deleting one answers with a ``network.sync`` task that pushes the change to those hosts.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import func, select

from sqlalchemy.orm import Session

from ...auth import Caller, Role
from ...db.engine import lock
from ...db.models import FloatingIp, Network, Port, Router
from ...errors import Conflict, Invalid
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned
from ..schemas import V1, Input, Items, Name, Ref, ResourceView
from .tasks import Accepted, task_view

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


def synced(frontend: FrontendDep, session: Session, caller: Caller, row: Router) -> Accepted[RouterView]:
    """The router's view with the task that pushes its network to the network's hosts."""
    task = frontend.tasks.create(session, "network.sync", caller.org_id, caller.user_id, "router", row.id,
                                 {"networks": [row.network_id]})
    return Accepted[RouterView](task=task_view(task, caller), resource=RouterView.model_validate(row))


@router.post("/routers", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[RouterView],
             summary="Create the router of a network (answers with the task that builds it on the network's hosts)")
def create_router(body: RouterCreate, caller: CallerDep, frontend: FrontendDep) -> Accepted[RouterView]:
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
        accepted = synced(frontend, session, caller, row)
    frontend.tasks.start(accepted.task.id)
    return accepted


@router.get("/routers", response_model=Items[RouterView], summary="List your routers")
def list_routers(caller: CallerDep, frontend: FrontendDep) -> Items[RouterView]:
    with frontend.db.read() as session:
        rows = session.execute(owned(Router, caller).order_by(Router.name, Router.id)).scalars()
        return Items(items=[RouterView.model_validate(r) for r in rows])


@router.get("/routers/{router_ref}", response_model=RouterView, summary="Show a router by id or name")
def show_router(router_ref: Ref, caller: CallerDep, frontend: FrontendDep) -> RouterView:
    with frontend.db.read() as session:
        return RouterView.model_validate(find(session, Router, router_ref, caller, "router"))


@router.patch("/routers/{router_ref}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[RouterView],
              summary="Rename a router or switch its SNAT (answers with the task that changes it on the hosts)")
def update_router(router_ref: Ref, body: RouterUpdate, caller: CallerDep, frontend: FrontendDep) -> Accepted[RouterView]:
    caller.require(Role.member, "changing a router")
    with frontend.db.transaction() as session:
        row = find(session, Router, router_ref, caller, "router")
        for field, value in body.model_dump(exclude_none=True).items():
            setattr(row, field, value)
        session.flush()
        accepted = synced(frontend, session, caller, row)
    frontend.tasks.start(accepted.task.id)
    return accepted


@router.delete("/routers/{router_ref}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[RouterView],
               summary="Delete a router no floating IP goes through (answers with the task that removes it from the hosts)")
def delete_router(router_ref: Ref, caller: CallerDep, frontend: FrontendDep) -> Accepted[RouterView]:
    caller.require(Role.member, "deleting a router")
    with frontend.db.transaction() as session:
        row = find(session, Router, router_ref, caller, "router")
        lock(session, Network, row.network_id)  # no floating IP may be associated while we look
        fips = session.execute(select(func.count()).select_from(FloatingIp).join(Port, Port.id == FloatingIp.port_id)
                               .where(Port.network_id == row.network_id)).scalar()
        if fips:
            raise Conflict(f"{fips} floating IPs are associated with ports of this router's network; "
                           "disassociate them first")
        accepted = synced(frontend, session, caller, row)
        session.delete(row)
    frontend.tasks.start(accepted.task.id)
    return accepted
