"""Address management: VNIs, IPs and MACs, and the ports that hold them.

Pure functions over a session, called inside the transaction that creates the resource.  An
address is picked while its subnet's row is locked, so two concurrent creates cannot pick the
same one; the unique constraints on VNIs, MACs and (subnet, IP) back this up.
"""

from __future__ import annotations

import ipaddress
import random

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .db.engine import lock, lock_org
from .db.models import FloatingIp, Port, SecurityGroup, SecurityGroupRule, Subnet, new_id
from .errors import Conflict, Invalid

__all__ = [
    "DEFAULT_GROUP", "VNI_MAX", "VNI_MIN", "Pool", "allocate_ip", "claim_ip", "create_port", "default_pools",
    "default_security_group", "egress_anywhere", "is_host_address", "new_mac", "pick_vni", "pools_of",
    "release_instance_ports",
]

VNI_MIN, VNI_MAX = 4096, (1 << 24) - 1
#: collisions are rare among 16 million VNIs; this many in a row means something is wrong
_ATTEMPTS = 64
#: the OUI-like prefix of every MAC we make: its first octet has the locally administered bit set
_MAC_PREFIX = "fa:16:3e"
DEFAULT_GROUP = "default"
#: an allocation pool: a range of a subnet's addresses, both ends included, as the API and the table hold it
Pool = dict[str, str]


def pick_vni(session: Session) -> int:
    """A random VXLAN id no subnet of the cloud uses."""
    for _ in range(_ATTEMPTS):
        vni = random.randint(VNI_MIN, VNI_MAX)
        if session.execute(select(Subnet.id).where(Subnet.vni == vni)).first() is None:
            return vni
    raise Conflict(f"no free VNI found in {_ATTEMPTS} tries; try again")


def _taken(session: Session, subnet: Subnet) -> set[str]:
    """Addresses of the subnet in use: its ports' and its network's floating IPs."""
    ports = session.execute(select(Port.ip_address).where(Port.subnet_id == subnet.id)).scalars()
    fips = session.execute(select(FloatingIp.address).where(FloatingIp.network_id == subnet.network_id)).scalars()
    return {*ports, *fips}


def _pool(start: ipaddress.IPv4Address, end: ipaddress.IPv4Address) -> Pool:
    return {"start": str(start), "end": str(end)}


def default_pools(cidr: str, gateway: str | None) -> list[Pool]:
    """Every host address of the subnet but its gateway: the ranges either side of it."""
    network = ipaddress.IPv4Network(cidr)
    first, last = network.network_address + 1, network.broadcast_address - 1
    if gateway is None:
        return [_pool(first, last)]
    address = ipaddress.IPv4Address(gateway)
    return [_pool(start, end) for start, end in ((first, address - 1), (address + 1, last)) if start <= end]


def pools_of(subnet: Subnet) -> list[Pool]:
    """The ranges automatic allocation takes the subnet's addresses from, lowest first."""
    if subnet.allocation_pools is None:  # none given: the default, which follows the CIDR and the gateway
        return default_pools(subnet.cidr, subnet.gateway)
    return list(subnet.allocation_pools)


def allocate_ip(session: Session, subnet: Subnet) -> str:
    """The lowest free address of the subnet's allocation pools (which never hold its gateway)."""
    lock(session, Subnet, subnet.id)
    taken = _taken(session, subnet)
    pools = pools_of(subnet)
    for pool in pools:
        start, end = int(ipaddress.IPv4Address(pool["start"])), int(ipaddress.IPv4Address(pool["end"]))
        for number in range(start, end + 1):
            address = str(ipaddress.IPv4Address(number))
            if address not in taken:
                return address
    ranges = ", ".join(f"{p['start']}-{p['end']}" for p in pools) or "none"
    raise Conflict(f"subnet {subnet.name!r} ({subnet.cidr}) has no free address in its allocation pools ({ranges})")


def is_host_address(cidr: str, ip: str) -> bool:
    """Whether ``ip`` is in ``cidr`` and is neither its network nor its broadcast address."""
    network, address = ipaddress.IPv4Network(cidr), ipaddress.IPv4Address(ip)
    return address in network and address not in (network.network_address, network.broadcast_address)


def claim_ip(session: Session, subnet: Subnet, ip: str, field: str | None = None) -> str:
    """``ip`` if it is a free host address of the subnet, in its pools or not; Invalid outside it, Conflict if
    taken or the gateway."""
    if not is_host_address(subnet.cidr, ip):
        raise Invalid(f"{ip} is not a host address of subnet {subnet.name!r} ({subnet.cidr})", field)
    lock(session, Subnet, subnet.id)
    if ip == subnet.gateway:
        raise Conflict(f"{ip} is the gateway of subnet {subnet.name!r}", field)
    if ip in _taken(session, subnet):
        raise Conflict(f"{ip} is in use in subnet {subnet.name!r}", field)
    return ip


def new_mac(session: Session) -> str:
    """A locally administered unicast MAC that no port has."""
    for _ in range(_ATTEMPTS):
        mac = ":".join([_MAC_PREFIX, *(f"{random.randrange(256):02x}" for _ in range(3))])
        if session.execute(select(Port.id).where(Port.mac_address == mac)).first() is None:
            return mac
    raise Conflict(f"no free MAC address found in {_ATTEMPTS} tries; try again")


def egress_anywhere(org_id: str) -> SecurityGroupRule:
    return SecurityGroupRule(org_id=org_id, status="active", direction="egress", protocol="any",
                             remote_cidr="0.0.0.0/0")


def default_security_group(session: Session, org_id: str) -> SecurityGroup:
    """The organization's ``default`` group, made on first need: all egress, ingress from its own members."""
    lock_org(session, org_id)  # two first needs at once must not both create it
    group = session.execute(select(SecurityGroup).where(SecurityGroup.org_id == org_id,
                                                        SecurityGroup.name == DEFAULT_GROUP)).scalar_one_or_none()
    if group is None:
        group = SecurityGroup(id=new_id(), org_id=org_id, name=DEFAULT_GROUP, status="active",
                              description="all egress; ingress from members of this group only")
        group.rules = [egress_anywhere(org_id),
                       SecurityGroupRule(org_id=org_id, status="active", direction="ingress", protocol="any",
                                         remote_group_id=group.id)]
        session.add(group)
        session.flush()
    return group


def create_port(session: Session, org_id: str, subnet: Subnet, groups: list[SecurityGroup], *, ip: str | None = None,
                name: str = "", instance_id: str | None = None, auto_delete: bool = False,
                prefix: str = "") -> Port:
    """A new active port on ``subnet``, at ``ip`` or the next free address of its pools."""
    address = claim_ip(session, subnet, ip, f"{prefix}ip") if ip else allocate_ip(session, subnet)
    port = Port(org_id=org_id, network_id=subnet.network_id, subnet_id=subnet.id, name=name,
                mac_address=new_mac(session), ip_address=address, instance_id=instance_id, auto_delete=auto_delete,
                status="active", security_groups=groups)
    session.add(port)
    session.flush()
    return port


def release_instance_ports(session: Session, instance_id: str) -> None:
    """Delete the ports made for the instance (freeing their floating IPs) and unbind the others."""
    ports = list(session.execute(select(Port).where(Port.instance_id == instance_id)).scalars())
    own = [p.id for p in ports if p.auto_delete]
    if own:
        session.execute(update(FloatingIp).where(FloatingIp.port_id.in_(own)).values(port_id=None))
    for port in ports:
        if port.auto_delete:
            session.delete(port)
        else:
            port.instance_id = None
    session.flush()
