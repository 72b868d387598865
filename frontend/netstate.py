"""What hypervisors must build of tenant networks: the bodies of ``net.sync`` (``docs/ops.md``), from the state.

A port is *bound* when its instance is placed on a hypervisor that runs the network driver
(its facts carry a ``vtep``, its underlay address).  The hosts of a network are the hosts of
its bound ports: they, and only they, are told about it.  One body describes a network for all
of its hosts (each host takes the ports with its own VTEP as its own), so a change reaches them
as one multicast.  Bodies carry a revision (the time their build began), which hosts use to
apply crossing syncs of a network in the order they were built.

Each port names its security groups, and the body describes every group its ports name, and
every group their rules name as remote (with that group's members: the addresses of its
ports).  A change of a group's rules concerns the hosts of its ports; a change of its members
(a port joins or leaves it) concerns the hosts of the ports whose groups name it as remote
(``group_audience``).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from .db.models import (FloatingIp, Hypervisor, Instance, Network, Port, Router, SecurityGroup, SecurityGroupRule,
                        Subnet, port_security_groups)

__all__ = ["NET_SYNC", "full_sync", "group_audience", "hosts_of", "instance_groups", "instance_networks", "port_host",
           "sync"]

NET_SYNC = "net.sync"
#: the API's protocol names as IP protocol numbers ("any": None)
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}


def _bound(session: Session, network_ids: Iterable[str]) -> list[tuple[Port, str, str]]:
    """The bound ports of the networks: (port, host name, host VTEP)."""
    ids = list(network_ids)
    if not ids:
        return []
    rows = session.execute(
        select(Port, Hypervisor.name, Hypervisor.facts)
        .options(selectinload(Port.security_groups))
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
        "ports": [{"id": p.id, "subnet_id": p.subnet_id, "mac": p.mac_address, "ip": p.ip_address, "vtep": vtep,
                   "security_groups": sorted(g.id for g in p.security_groups)} for p, _, vtep in ports],
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


def sync(session: Session, network_ids: Iterable[str], extra_hosts: Iterable[str] = (),
         revision: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """The body of a sync of these networks, and the hosts to send it to: the networks' hosts now,
    and ``extra_hosts`` (the hosts they had before a change, which must remove what they no longer carry).

    The revision is the time the build *began*: every read comes after it, so a body holds every
    change committed before its revision.  Taken at the end, a build that read a port just before
    its instance was released, and finished just after the release's own sync was built, would
    outrank that sync with the stale port (a soak at 2,000 hosts left one so)."""
    revision = time.time_ns() if revision is None else revision
    ids = sorted(set(network_ids))
    bound = _bound(session, ids)
    networks = [_network(session, n, bound) for n in session.execute(
        select(Network).where(Network.id.in_(ids)).order_by(Network.id)).scalars()
        if any(p.network_id == n.id for p, _, _ in bound)]
    extra = [host.name for host in session.execute(select(Hypervisor).where(Hypervisor.name.in_(list(extra_hosts))))
             .scalars() if isinstance(host.facts, dict) and host.facts.get("vtep")]  # the others carry no network
    hosts = sorted({host for _, host, _ in bound} | set(extra))
    groups = _groups(session, {g.id for p, _, _ in bound for g in p.security_groups})
    return {"revision": revision, "scope": ids, "networks": networks, "security_groups": groups}, hosts


def _groups(session: Session, named: set[str]) -> list[dict[str, Any]]:
    """The groups the ports name, and those their rules name as remote, with the remote ones' members."""
    if not named:
        return []
    rules = list(session.execute(select(SecurityGroupRule).where(SecurityGroupRule.security_group_id.in_(named))
                                 .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)).scalars())
    remote = {r.remote_group_id for r in rules if r.remote_group_id is not None}
    extra = remote - named
    if extra:
        rules += session.execute(select(SecurityGroupRule).where(SecurityGroupRule.security_group_id.in_(extra))
                                 .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)).scalars()
    members: dict[str, list[str]] = {g: [] for g in remote}
    for group_id, ip in session.execute(
            select(port_security_groups.c.security_group_id, Port.ip_address)
            .join(Port, Port.id == port_security_groups.c.port_id)
            .where(port_security_groups.c.security_group_id.in_(remote))):
        members[group_id].append(ip)
    out = []
    for group_id in sorted(named | remote):
        out.append({"id": group_id, "rules": [_rule(r) for r in rules if r.security_group_id == group_id],
                    "members": sorted(set(members[group_id])) if group_id in remote else None})
    return out


def _rule(rule: SecurityGroupRule) -> dict[str, Any]:
    protocol = PROTOCOLS.get(rule.protocol) if not rule.protocol.isdigit() else int(rule.protocol)
    return {"direction": rule.direction, "protocol": protocol, "port_min": rule.port_min, "port_max": rule.port_max,
            "icmp_type": rule.icmp_type, "icmp_code": rule.icmp_code,
            "remote_cidr": rule.remote_cidr if rule.remote_cidr not in (None, "0.0.0.0/0") else None,
            "remote_group": rule.remote_group_id}


def instance_groups(session: Session, instance_id: str) -> list[str]:
    """The security groups of the instance's ports."""
    return sorted(set(session.execute(
        select(port_security_groups.c.security_group_id).join(Port, Port.id == port_security_groups.c.port_id)
        .where(Port.instance_id == instance_id)).scalars()))


def port_host(session: Session, port_id: str) -> str | None:
    """The host of a bound port, if that host runs the network driver."""
    row = session.execute(select(Hypervisor.name, Hypervisor.facts).join(Instance, Instance.hypervisor_id == Hypervisor.id)
                          .join(Port, Port.instance_id == Instance.id).where(Port.id == port_id)).first()
    return row[0] if row is not None and isinstance(row[1], dict) and row[1].get("vtep") else None


def group_audience(session: Session, rules_of: Iterable[str] = (), members_of: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """The networks and hosts a change concerns: that of the rules of groups ``rules_of`` (the
    hosts of their ports), and that of the members of groups ``members_of`` (the hosts of the
    ports whose groups' rules name them as remote)."""
    groups = set(rules_of)
    naming = set(members_of)
    if naming:
        groups |= set(session.execute(select(SecurityGroupRule.security_group_id)
                                      .where(SecurityGroupRule.remote_group_id.in_(naming))).scalars())
    if not groups:
        return [], []
    rows = session.execute(
        select(Port.network_id, Hypervisor.name, Hypervisor.facts)
        .join(port_security_groups, port_security_groups.c.port_id == Port.id)
        .join(Instance, Instance.id == Port.instance_id)
        .join(Hypervisor, Hypervisor.id == Instance.hypervisor_id)
        .where(port_security_groups.c.security_group_id.in_(groups))).all()
    bound = [(network, host) for network, host, facts in rows if isinstance(facts, dict) and facts.get("vtep")]
    return sorted({n for n, _ in bound}), sorted({h for _, h in bound})


def full_sync(session: Session, host: str) -> dict[str, Any]:
    """Everything ``host`` must carry: what it converges on after a restart or a time away."""
    revision = time.time_ns()
    ids = set(session.execute(
        select(Port.network_id).join(Instance, Instance.id == Port.instance_id)
        .join(Hypervisor, Hypervisor.id == Instance.hypervisor_id).where(Hypervisor.name == host)).scalars())
    body, _ = sync(session, ids, revision=revision)
    return {**body, "scope": None}
