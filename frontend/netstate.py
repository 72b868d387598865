"""What hypervisors must build of tenant networks: the bodies of ``net.sync`` (``docs/ops.md``), from the state.

A port is *bound* when its instance is placed on a hypervisor that runs the network driver
(its facts carry a ``vtep``, its underlay address).  The hosts of a network are the hosts of
its bound ports: they, and only they, are told about it.  One body describes a network for all
of its hosts (each host takes the ports with its own VTEP as its own), so a change reaches them
as one multicast.  Bodies carry a revision (the time they were built), which hosts use to
apply crossing syncs of a network in the order they were built.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db.models import FloatingIp, Hypervisor, Instance, Network, Port, Router, Subnet

__all__ = ["NET_SYNC", "full_sync", "hosts_of", "instance_networks", "sync"]

NET_SYNC = "net.sync"


def _bound(session: Session, network_ids: Iterable[str]) -> list[tuple[Port, str, str]]:
    """The bound ports of the networks: (port, host name, host VTEP)."""
    ids = list(network_ids)
    if not ids:
        return []
    rows = session.execute(
        select(Port, Hypervisor.name, Hypervisor.facts)
        .join(Instance, Instance.id == Port.instance_id)
        .join(Hypervisor, Hypervisor.id == Instance.hypervisor_id)
        .where(Port.network_id.in_(ids))
        .order_by(Port.created_at, Port.id)).all()
    return [(port, name, str(facts["vtep"])) for port, name, facts in rows if isinstance(facts, dict) and facts.get("vtep")]


def hosts_of(session: Session, network_ids: Iterable[str]) -> set[str]:
    return {host for _, host, _ in _bound(session, network_ids)}


def instance_networks(session: Session, instance_id: str) -> list[str]:
    return sorted(set(session.execute(select(Port.network_id).where(Port.instance_id == instance_id)).scalars()))


def _network(session: Session, network: Network, bound: list[tuple[Port, str, str]]) -> dict[str, Any]:
    subnets = list(session.execute(select(Subnet).where(Subnet.network_id == network.id)
                                   .order_by(Subnet.created_at, Subnet.id)).scalars())
    router = session.execute(select(Router).where(Router.network_id == network.id)).scalar_one_or_none()
    ports = [(p, host, vtep) for p, host, vtep in bound if p.network_id == network.id]
    bound_ids = {p.id for p, _, _ in ports}
    fips = [f for f in session.execute(
        select(FloatingIp).join(Port, Port.id == FloatingIp.port_id).where(Port.network_id == network.id)
        .order_by(FloatingIp.address)).scalars() if f.port_id in bound_ids] if router is not None else []
    return {
        "id": network.id,
        "router": router is not None,
        "snat": bool(router is not None and router.snat),
        "external": _external(session, fips),
        "subnets": [{"id": s.id, "vni": s.vni, "cidr": s.cidr, "gateway": s.gateway, "dhcp": s.dhcp,
                     "dns_servers": list(s.dns_servers or [])} for s in subnets if s.gateway],
        "ports": [{"id": p.id, "subnet_id": p.subnet_id, "mac": p.mac_address, "ip": p.ip_address, "vtep": vtep}
                  for p, _, vtep in ports],
        "floating_ips": [{"address": f.address, "port_id": f.port_id} for f in fips],
    }


def _external(session: Session, fips: list[FloatingIp]) -> dict[str, str] | None:
    """The external subnet the network's floating IPs come from (the API keeps them to one network)."""
    if not fips:
        return None
    address = ipaddress.IPv4Address(fips[0].address)
    for subnet in session.execute(select(Subnet).where(Subnet.network_id == fips[0].network_id)).scalars():
        if address in ipaddress.IPv4Network(subnet.cidr) and subnet.gateway:
            return {"cidr": subnet.cidr, "gateway": subnet.gateway}
    return None


def sync(session: Session, network_ids: Iterable[str], extra_hosts: Iterable[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """The body of a sync of these networks, and the hosts to send it to: the networks' hosts now,
    and ``extra_hosts`` (the hosts they had before a change, which must remove what they no longer carry)."""
    ids = sorted(set(network_ids))
    bound = _bound(session, ids)
    networks = [_network(session, n, bound) for n in session.execute(
        select(Network).where(Network.id.in_(ids)).order_by(Network.id)).scalars()
        if any(p.network_id == n.id for p, _, _ in bound)]
    extra = [host.name for host in session.execute(select(Hypervisor).where(Hypervisor.name.in_(list(extra_hosts))))
             .scalars() if isinstance(host.facts, dict) and host.facts.get("vtep")]  # the others carry no network
    hosts = sorted({host for _, host, _ in bound} | set(extra))
    return {"revision": time.time_ns(), "scope": ids, "networks": networks}, hosts


def full_sync(session: Session, host: str) -> dict[str, Any]:
    """Everything ``host`` must carry: what it converges on after a restart or a time away."""
    ids = set(session.execute(
        select(Port.network_id).join(Instance, Instance.id == Port.instance_id)
        .join(Hypervisor, Hypervisor.id == Instance.hypervisor_id).where(Hypervisor.name == host)).scalars())
    body, _ = sync(session, ids)
    return {**body, "scope": None}
