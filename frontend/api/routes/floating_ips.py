"""Floating IPs: public addresses from an external network, associated with a port through its router.

Associating, moving, disassociating and releasing one answers with a ``network.sync`` task that
takes the address off the host that served it and onto the host of its new port.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ... import ipam, quotas
from ...auth import Caller, Role
from ...db.engine import lock
from ...db.models import FloatingIp, Network, Port, Router, Subnet
from ...errors import Conflict, Invalid, NotFound
from ..allorgs import AllOrgsDep
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned
from ..schemas import V1, Input, Items, Ref, ResourceView
from .tasks import Accepted, task_view

router = APIRouter(prefix=V1, tags=["floating-ips"])


class FloatingIpCreate(Input):
    network: Ref | None = Field(default=None, description="an external network; default: the only one")


class FloatingIpUpdate(Input):
    port: Ref | None = Field(description="the port to associate with, or null to disassociate")


class FloatingIpView(ResourceView):
    network_id: str
    address: str
    port_id: str | None


def _external(session: Session, caller: Caller, ref: str | None) -> Network:
    if ref is not None:
        network = find(session, Network, ref, caller, "network", "network", shared=True)
        if not network.external:
            raise Invalid(f"network {network.name!r} is not external; floating IPs come from external networks",
                          "network")
        return network
    networks = list(session.execute(select(Network).where(Network.external.is_(True)).limit(2)).scalars())
    if len(networks) != 1:
        raise Invalid("there is no external network" if not networks else
                      "there are several external networks; name the one to allocate from", "network")
    return networks[0]


def _get(session: Session, caller: Caller, ref: str) -> FloatingIp:
    row = session.execute(select(FloatingIp).where(FloatingIp.org_id == caller.org_id,
                                                   or_(FloatingIp.id == ref, FloatingIp.address == ref))
                          ).scalar_one_or_none()
    if row is None:
        raise NotFound("floating IP", ref)
    return row


@router.post("/floating-ips", status_code=status.HTTP_201_CREATED, response_model=FloatingIpView,
             summary="Allocate a floating IP from an external network")
def create_floating_ip(body: FloatingIpCreate, caller: CallerDep, frontend: FrontendDep) -> FloatingIpView:
    caller.require(Role.member, "allocating a floating IP")
    with frontend.db.transaction() as session:
        network = _external(session, caller, body.network)
        quotas.check(session, caller.org_id, floating_ips=1)
        subnets = session.execute(select(Subnet).where(Subnet.network_id == network.id)
                                  .order_by(Subnet.created_at, Subnet.id)).scalars()
        for subnet in subnets:
            try:
                address = ipam.allocate_ip(session, subnet)
                break
            except Conflict:
                continue
        else:
            raise Conflict(f"external network {network.name!r} has no free address in the allocation pools of its "
                           "subnets", "network")
        row = FloatingIp(org_id=caller.org_id, network_id=network.id, address=address, status="active")
        session.add(row)
        session.flush()
        return FloatingIpView.model_validate(row)


@router.get("/floating-ips", response_model=Items[FloatingIpView], summary="List your floating IPs")
def list_floating_ips(caller: CallerDep, frontend: FrontendDep, all_orgs: AllOrgsDep) -> Items[FloatingIpView]:
    with frontend.db.read() as session:
        query = owned(FloatingIp, caller, all_orgs=all_orgs).order_by(FloatingIp.created_at, FloatingIp.id)
        rows = session.execute(query).scalars()
        return Items(items=[FloatingIpView.model_validate(f) for f in rows])


@router.get("/floating-ips/{fip}", response_model=FloatingIpView, summary="Show a floating IP by id or address")
def show_floating_ip(fip: Ref, caller: CallerDep, frontend: FrontendDep) -> FloatingIpView:
    with frontend.db.read() as session:
        return FloatingIpView.model_validate(_get(session, caller, fip))


def _synced(frontend: FrontendDep, session: Session, caller: Caller, row: FloatingIp,
            networks: set[str]) -> Accepted[FloatingIpView]:
    """The view, with the task that moves the address on the hosts of the networks it left and joined."""
    task = frontend.tasks.create(session, "network.sync", caller.org_id, caller.user_id, "floating_ip", row.id,
                                 {"networks": sorted(networks)})
    return Accepted[FloatingIpView](task=task_view(task, caller), resource=FloatingIpView.model_validate(row))


def _port_network(session: Session, port_id: str | None) -> set[str]:
    port = session.get(Port, port_id) if port_id else None
    return {port.network_id} if port is not None else set()


@router.patch("/floating-ips/{fip}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[FloatingIpView],
              summary="Associate a floating IP with a port (whose network needs a router), move it to another "
                      "port, or disassociate it (answers with the task that moves it on the hosts)")
def update_floating_ip(fip: Ref, body: FloatingIpUpdate, caller: CallerDep,
                       frontend: FrontendDep) -> Accepted[FloatingIpView]:
    caller.require(Role.member, "associating a floating IP")
    with frontend.db.transaction() as session:
        row = _get(session, caller, fip)
        networks = _port_network(session, row.port_id)
        if body.port is None:
            row.port_id = None
        else:
            port = find(session, Port, body.port, caller, "port", "port")
            lock(session, Network, port.network_id)  # its router may not go away while we look
            if session.execute(select(Router.id).where(Router.network_id == port.network_id)).first() is None:
                raise Conflict("the port's network has no router for the floating IP to reach it through; "
                               "create one first", "port")
            holder = session.execute(select(FloatingIp.address).where(FloatingIp.port_id == port.id,
                                                                      FloatingIp.id != row.id)).scalar()
            if holder is not None:
                raise Conflict(f"the port has floating IP {holder} already", "port")
            # A network's floating IPs leave by one external leg per host, to one gateway.
            other = session.execute(select(FloatingIp.address).join(Port, Port.id == FloatingIp.port_id)
                                    .where(Port.network_id == port.network_id, FloatingIp.id != row.id,
                                           FloatingIp.network_id != row.network_id)).scalar()
            if other is not None:
                raise Conflict(f"the port's network has floating IP {other} from another external network; "
                               "a network's floating IPs come from one external network", "port")
            row.port_id = port.id
            networks.add(port.network_id)
        session.flush()
        accepted = _synced(frontend, session, caller, row, networks)
    frontend.tasks.start(accepted.task.id)
    return accepted


@router.delete("/floating-ips/{fip}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[FloatingIpView],
               summary="Release a floating IP, disassociating it (answers with the task that takes it off its host)")
def delete_floating_ip(fip: Ref, caller: CallerDep, frontend: FrontendDep) -> Accepted[FloatingIpView]:
    caller.require(Role.member, "releasing a floating IP")
    with frontend.db.transaction() as session:
        row = _get(session, caller, fip)
        accepted = _synced(frontend, session, caller, row, _port_network(session, row.port_id))
        session.delete(row)
    frontend.tasks.start(accepted.task.id)
    return accepted
