"""Networks: a tenant's VPCs, and the external networks (admin only) that hold floating IP pools.

Every organization sees the external networks, to allocate floating IPs from; only the owner
may change them.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import func, select

from ... import quotas
from ...auth import Role
from ...db.engine import lock
from ...db.models import FloatingIp, Network, Port, Router, Subnet
from ...errors import Conflict
from ..allorgs import AllOrgsDep
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned, unique_name
from ..refusals import refusals
from ..schemas import V1, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["networks"])


class NetworkCreate(Input):
    name: Name
    external: bool = False


class NetworkUpdate(Input):
    name: Name


class NetworkView(ResourceView):
    name: str
    external: bool


@router.post("/networks", status_code=status.HTTP_201_CREATED, response_model=NetworkView,
             summary="Create a network (external ones, for floating IPs: admins only)")
def create_network(body: NetworkCreate, caller: CallerDep, frontend: FrontendDep) -> NetworkView:
    caller.require(Role.member, "creating a network")
    if body.external:
        caller.require(Role.admin, "creating an external network")
    with frontend.db.transaction() as session:
        quotas.check(session, caller.org_id, networks=1)
        unique_name(session, Network, body.name, "network", caller.org_id)
        network = Network(org_id=caller.org_id, name=body.name, external=body.external, status="active")
        session.add(network)
        session.flush()
        return NetworkView.model_validate(network)


@router.get("/networks", response_model=Items[NetworkView],
            summary="List your networks and the external ones")
def list_networks(caller: CallerDep, frontend: FrontendDep, all_orgs: AllOrgsDep) -> Items[NetworkView]:
    with frontend.db.read() as session:
        query = owned(Network, caller, shared=True, all_orgs=all_orgs).order_by(Network.name, Network.id)
        rows = session.execute(query).scalars()
        return Items(items=[NetworkView.model_validate(n) for n in rows])


@router.get("/networks/{network}", response_model=NetworkView, summary="Show a network by id or name",
            responses=refusals(409))
def show_network(network: Ref, caller: CallerDep, frontend: FrontendDep) -> NetworkView:
    with frontend.db.read() as session:
        return NetworkView.model_validate(find(session, Network, network, caller, "network", shared=True))


@router.patch("/networks/{network}", response_model=NetworkView, summary="Rename a network")
def update_network(network: Ref, body: NetworkUpdate, caller: CallerDep, frontend: FrontendDep) -> NetworkView:
    caller.require(Role.member, "renaming a network")
    with frontend.db.transaction() as session:
        row = find(session, Network, network, caller, "network")
        if body.name != row.name:
            unique_name(session, Network, body.name, "network", caller.org_id)
            row.name = body.name
        session.flush()
        return NetworkView.model_validate(row)


@router.delete("/networks/{network}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a network that has no subnets, ports, router or floating IPs")
def delete_network(network: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "deleting a network")
    with frontend.db.transaction() as session:
        row = find(session, Network, network, caller, "network")
        lock(session, Network, row.id)  # no subnet may be added while we look
        for model, what in ((Subnet, "subnets"), (Port, "ports"), (Router, "router"), (FloatingIp, "floating IPs")):
            count = session.execute(select(func.count()).select_from(model).where(model.network_id == row.id)).scalar()
            if count:
                raise Conflict(f"network {row.name!r} still has {count} {what}; delete them first")
        session.delete(row)
