"""Subnets: the IPv4 ranges of a network, each its own VXLAN segment.

The CIDRs of one network may not overlap; different networks (and organizations) may reuse
the same ranges, since each network is isolated.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import AfterValidator, Field, ValidationInfo, field_validator
from sqlalchemy import func, select

from ... import ipam
from ...auth import Role
from ...db.engine import lock
from ...db.models import FloatingIp, Network, Port, Subnet
from ...errors import Conflict
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned
from ..refusals import refusals
from ..schemas import V1, IPv4, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["subnets"])

MIN_PREFIX, MAX_PREFIX = 8, 29


def _cidr(text: str) -> str:
    if ":" in text:
        raise ValueError(f"{text!r} is IPv6, which tenant networks do not carry yet: give an IPv4 network in "
                         "CIDR notation, e.g. 10.0.0.0/24")
    try:
        interface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 network in CIDR notation, e.g. 10.0.0.0/24") from None
    network = interface.network
    if not MIN_PREFIX <= network.prefixlen <= MAX_PREFIX:
        raise ValueError(f"the prefix must be between /{MIN_PREFIX} and /{MAX_PREFIX}, not /{network.prefixlen}")
    if interface.ip != network.network_address:
        raise ValueError(f"{text} is not a network address: its host bits are set (did you mean {network}?)")
    return str(network)


Cidr = Annotated[str, AfterValidator(_cidr)]


class SubnetCreate(Input):
    name: Name
    network: Ref
    cidr: Cidr
    gateway: IPv4 | None = Field(default=None, description="default: the first host address")
    dhcp: bool = True
    dns_servers: list[IPv4] = Field(default_factory=list, max_length=4)

    @field_validator("gateway")
    @classmethod
    def _inside(cls, gateway: str | None, info: ValidationInfo) -> str | None:
        cidr = info.data.get("cidr")
        if gateway is not None and cidr is not None and not ipam.is_host_address(cidr, gateway):
            raise ValueError(f"{gateway} is not a host address of {cidr}")
        return gateway


class SubnetUpdate(Input):
    name: Name | None = None
    dhcp: bool | None = None
    dns_servers: list[IPv4] | None = Field(default=None, max_length=4)


class SubnetView(ResourceView):
    name: str
    network_id: str
    cidr: str
    gateway: str | None
    vni: int
    dhcp: bool
    dns_servers: list[str]


@router.post("/subnets", status_code=status.HTTP_201_CREATED, response_model=SubnetView,
             summary="Create a subnet on a network")
def create_subnet(body: SubnetCreate, caller: CallerDep, frontend: FrontendDep) -> SubnetView:
    caller.require(Role.member, "creating a subnet")
    with frontend.db.transaction() as session:
        network = find(session, Network, body.network, caller, "network", "network")
        lock(session, Network, network.id)  # two overlapping creates must not both pass the check
        new = ipaddress.IPv4Network(body.cidr)
        for other in session.execute(select(Subnet).where(Subnet.network_id == network.id)).scalars():
            if new.overlaps(ipaddress.IPv4Network(other.cidr)):
                raise Conflict(f"{body.cidr} overlaps subnet {other.name!r} ({other.cidr}) of network "
                               f"{network.name!r}", "cidr")
        subnet = Subnet(org_id=caller.org_id, network_id=network.id, name=body.name, cidr=body.cidr,
                        gateway=body.gateway or str(next(new.hosts())), vni=ipam.pick_vni(session), dhcp=body.dhcp,
                        dns_servers=body.dns_servers, status="active")
        session.add(subnet)
        session.flush()
        return SubnetView.model_validate(subnet)


@router.get("/subnets", response_model=Items[SubnetView], summary="List your subnets, or those of one network",
            responses=refusals(404))
def list_subnets(caller: CallerDep, frontend: FrontendDep, network: Ref | None = None) -> Items[SubnetView]:
    with frontend.db.read() as session:
        query = owned(Subnet, caller)
        if network is not None:
            query = query.where(Subnet.network_id == find(session, Network, network, caller, "network", "network").id)
        rows = session.execute(query.order_by(Subnet.created_at, Subnet.id)).scalars()
        return Items(items=[SubnetView.model_validate(s) for s in rows])


@router.get("/subnets/{subnet}", response_model=SubnetView, summary="Show a subnet by id or name")
def show_subnet(subnet: Ref, caller: CallerDep, frontend: FrontendDep) -> SubnetView:
    with frontend.db.read() as session:
        return SubnetView.model_validate(find(session, Subnet, subnet, caller, "subnet"))


@router.patch("/subnets/{subnet}", response_model=SubnetView, summary="Rename a subnet or change its DHCP and DNS")
def update_subnet(subnet: Ref, body: SubnetUpdate, caller: CallerDep, frontend: FrontendDep) -> SubnetView:
    caller.require(Role.member, "changing a subnet")
    with frontend.db.transaction() as session:
        row = find(session, Subnet, subnet, caller, "subnet")
        for field, value in body.model_dump(exclude_none=True).items():
            setattr(row, field, value)
        session.flush()
        return SubnetView.model_validate(row)


@router.delete("/subnets/{subnet}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a subnet that no port or floating IP uses")
def delete_subnet(subnet: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "deleting a subnet")
    with frontend.db.transaction() as session:
        row = find(session, Subnet, subnet, caller, "subnet")
        lock(session, Subnet, row.id)  # no port may take an address while we look
        ports = session.execute(select(func.count()).where(Port.subnet_id == row.id)).scalar()
        if ports:
            raise Conflict(f"subnet {row.name!r} still has {ports} ports; delete them first")
        network = ipaddress.IPv4Network(row.cidr)
        fips = session.execute(select(FloatingIp.address).where(FloatingIp.network_id == row.network_id)).scalars()
        used = sum(ipaddress.IPv4Address(a) in network for a in fips)
        if used:
            raise Conflict(f"{used} floating IPs are allocated from subnet {row.name!r}; release them first")
        session.delete(row)
