"""Subnets: the IPv4 ranges of a network, each its own VXLAN segment.

The CIDRs of one network may not overlap; different networks (and organizations) may reuse
the same ranges, since each network is isolated.  Ports and floating IPs given no address take
the lowest free one of the subnet's allocation pools; one asked for by address may be anywhere
in the CIDR but the gateway, so that addresses kept out of the pools can still be handed out
on purpose.
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
from ...errors import Conflict, Invalid
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


MAX_POOLS = 16


class AllocationPool(Input):
    """A range of the subnet's addresses, both ends included."""

    start: IPv4
    end: IPv4


class SubnetCreate(Input):
    name: Name
    network: Ref
    cidr: Cidr
    gateway: IPv4 | None = Field(default=None, description="default: the first host address")
    dhcp: bool = True
    dns_servers: list[IPv4] = Field(default_factory=list, max_length=4)
    allocation_pools: list[AllocationPool] | None = Field(
        default=None, max_length=MAX_POOLS,
        description="where ports and floating IPs given no address take theirs: ranges of host addresses of the "
                    "CIDR, without the gateway, not overlapping; an empty list: only addresses asked for; default: "
                    "every host address but the gateway")

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
    allocation_pools: list[AllocationPool] | None = Field(
        default=None, max_length=MAX_POOLS,
        description="replaces the pools, under the same rules as at create; addresses already given outside the "
                    "new pools stay with their ports and floating IPs")


class SubnetView(ResourceView):
    name: str
    network_id: str
    cidr: str
    gateway: str | None
    vni: int
    dhcp: bool
    dns_servers: list[str]
    allocation_pools: list[AllocationPool] = Field(description="lowest first; the default ones when none were given")

    @field_validator("allocation_pools", mode="before")
    @classmethod
    def _default(cls, pools: list[ipam.Pool] | None, info: ValidationInfo) -> list[ipam.Pool]:
        return pools if pools is not None else ipam.default_pools(info.data["cidr"], info.data["gateway"])


def _check_end(network: ipaddress.IPv4Network, address: ipaddress.IPv4Address, field: str) -> None:
    if address not in network:
        raise Invalid(f"{address} is outside the subnet's CIDR {network}", field)
    if address in (network.network_address, network.broadcast_address):
        kind = "network" if address == network.network_address else "broadcast"
        raise Invalid(f"{address} is the {kind} address of {network}, which no port may have", field)


def _checked_pools(cidr: str, gateway: str | None, pools: list[AllocationPool]) -> list[ipam.Pool]:
    """The pools, lowest first, if each is a range of host addresses of ``cidr`` without the gateway and
    none overlaps another; Invalid naming the first that is not."""
    network = ipaddress.IPv4Network(cidr)
    ranges = []
    for i, pool in enumerate(pools):
        field = f"allocation_pools[{i}]"
        start, end = ipaddress.IPv4Address(pool.start), ipaddress.IPv4Address(pool.end)
        _check_end(network, start, f"{field}.start")
        _check_end(network, end, f"{field}.end")
        if start > end:
            raise Invalid(f"the start {start} is after the end {end}", field)
        if gateway is not None and start <= ipaddress.IPv4Address(gateway) <= end:
            raise Invalid(f"holds the gateway {gateway}, which no port may take", field)
        ranges.append((start, end, i))
    ranges.sort()
    for (_, previous_end, j), (start, end, i) in zip(ranges, ranges[1:], strict=False):
        if start <= previous_end:
            raise Invalid(f"{start}-{end} overlaps allocation_pools[{j}]", f"allocation_pools[{i}]")
    return [{"start": str(start), "end": str(end)} for start, end, _ in ranges]


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
        gateway = body.gateway or str(next(new.hosts()))
        pools = None if body.allocation_pools is None else _checked_pools(body.cidr, gateway, body.allocation_pools)
        subnet = Subnet(org_id=caller.org_id, network_id=network.id, name=body.name, cidr=body.cidr,
                        gateway=gateway, vni=ipam.pick_vni(session), dhcp=body.dhcp, dns_servers=body.dns_servers,
                        allocation_pools=pools, status="active")
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


@router.patch("/subnets/{subnet}", response_model=SubnetView,
              summary="Rename a subnet or change its DHCP, DNS and allocation pools")
def update_subnet(subnet: Ref, body: SubnetUpdate, caller: CallerDep, frontend: FrontendDep) -> SubnetView:
    caller.require(Role.member, "changing a subnet")
    with frontend.db.transaction() as session:
        row = find(session, Subnet, subnet, caller, "subnet")
        if body.allocation_pools is not None:
            row.allocation_pools = _checked_pools(row.cidr, row.gateway, body.allocation_pools)
        for field, value in body.model_dump(exclude_none=True, exclude={"allocation_pools"}).items():
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
