"""What a hypervisor's networks should be: the body of ``net.sync`` (``docs/ops.md``), typed.

The frontend sends hosts the desired state of some networks (``scope``: their ids) or of all of
a host's networks (``scope`` null).  A network in scope but not in ``networks``, or without a
port on the host, is to be removed from the host; networks out of scope are left as they are.
For each network the body carries its subnets and every port bound to an instance, with the
VTEP (underlay address) of the instance's host: a host takes the ports with its own VTEP as
its own, and the others as where to tunnel their MACs.  So one body serves every host of a
network, and the frontend multicasts it.  Bodies carry a revision (when the frontend built
them): two syncs of a network that cross on the way are applied in the order they were built.

Each port names its security groups; the body describes those groups (their rules), and gives
the member addresses of each group a rule names as remote.  A host firewalls its own ports
with them (``firewall.py``); a group's description in a newer body replaces an older one.  A
port that names no groups at all (the field left out, not an empty list) is not firewalled.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..argcheck import BOOL, CIDR4, IPV4, MAC, UUID, Int, ListOf, OneOf, Record, nullable, optional
from .exceptions import BadRequest
from .firewall_state import ICMP, TCP, UDP, Rule

__all__ = ["ARGS", "DesiredNetwork", "DesiredState", "External", "FloatingIp", "Group", "LocalPort", "RemotePort",
           "Subnet", "desired_state"]

#: VXLAN's 24-bit segment id; 0 is not used
MAX_VNI = (1 << 24) - 1
#: bounds the work one body can ask for
MAX_NETWORKS = 4096
MAX_SUBNETS = 64
MAX_PORTS = 65536
MAX_DNS = 8
MAX_GROUPS_PER_PORT = 16
MAX_GROUPS = 4096
MAX_RULES = 1024

_SUBNET = Record({"id": UUID, "vni": Int(1, MAX_VNI), "cidr": CIDR4, "gateway": IPV4, "dhcp": BOOL,
                  "dns_servers": ListOf(IPV4, MAX_DNS)})
_PORT = Record({"id": UUID, "subnet_id": UUID, "mac": MAC, "ip": IPV4, "vtep": IPV4,
                "security_groups": optional(ListOf(UUID, MAX_GROUPS_PER_PORT))})
_RULE = Record({"direction": OneOf(("ingress", "egress")), "protocol": nullable(Int(0, 255)),
                "port_min": nullable(Int(1, 65535)), "port_max": nullable(Int(1, 65535)),
                "icmp_type": nullable(Int(0, 255)), "icmp_code": nullable(Int(0, 255)),
                "remote_cidr": nullable(CIDR4), "remote_group": nullable(UUID)})
#: a security group: its rules, and its members' addresses when a rule of the body names it as remote
_GROUP = Record({"id": UUID, "rules": ListOf(_RULE, MAX_RULES), "members": nullable(ListOf(IPV4, MAX_PORTS))})
_EXTERNAL = Record({"cidr": CIDR4, "gateway": IPV4})
_FLOATING_IP = Record({"address": IPV4, "port_id": UUID})
_NETWORK = Record({"id": UUID, "router": BOOL, "snat": BOOL, "external": nullable(_EXTERNAL),
                   "subnets": ListOf(_SUBNET, MAX_SUBNETS), "ports": ListOf(_PORT, MAX_PORTS),
                   "floating_ips": ListOf(_FLOATING_IP, MAX_PORTS)})

#: a body's revision: when the frontend built it (ns); a host never applies an older one over a newer
MAX_REVISION = (1 << 63) - 1

ARGS: dict[str, Record] = {
    "net.sync": Record({"revision": Int(0, MAX_REVISION), "scope": nullable(ListOf(UUID, MAX_NETWORKS)),
                        "networks": ListOf(_NETWORK, MAX_NETWORKS),
                        "security_groups": optional(ListOf(_GROUP, MAX_GROUPS))}),
    "net.inventory": Record({}),
}


@dataclass(frozen=True, slots=True)
class Subnet:
    id: str
    vni: int
    cidr: ipaddress.IPv4Network
    gateway: str
    dhcp: bool
    dns_servers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LocalPort:
    id: str
    subnet_id: str
    mac: str
    ip: str
    #: its security groups' ids: what its firewall allows (``DesiredState.groups``); None (none
    #: sent): the port is not firewalled
    security_groups: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    rules: tuple[Rule, ...]
    #: its members' addresses, if a rule of the body names it as remote; else None (not sent)
    members: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class RemotePort:
    subnet_id: str
    mac: str
    ip: str
    vtep: str


@dataclass(frozen=True, slots=True)
class External:
    """The external network a router reaches: where its floating IPs live, and their gateway."""

    cidr: ipaddress.IPv4Network
    gateway: str


@dataclass(frozen=True, slots=True)
class FloatingIp:
    address: str
    #: a port on this host
    port_id: str


@dataclass(frozen=True, slots=True)
class DesiredNetwork:
    id: str
    #: the network has a router: its gateways route between its subnets, and outward
    router: bool
    #: the router SNATs its subnets' egress to the host's external address
    snat: bool
    external: External | None
    subnets: tuple[Subnet, ...]
    #: the ports on this host
    ports: tuple[LocalPort, ...]
    #: the ports on other hosts
    remote_ports: tuple[RemotePort, ...]
    #: the floating IPs of the ports on this host
    floating_ips: tuple[FloatingIp, ...] = ()


@dataclass(frozen=True, slots=True)
class DesiredState:
    #: the networks described; None: every network (a full sync)
    scope: frozenset[str] | None
    networks: tuple[DesiredNetwork, ...]
    revision: int = 0
    #: the security groups of the body's ports (and those their rules name as remote), by id
    groups: dict[str, Group] = field(default_factory=dict)


def desired_state(args: dict[str, Any], vtep: str) -> DesiredState:
    """The typed state of a checked ``net.sync`` body for the host whose VTEP is ``vtep``; a state
    that cannot be built is a ``BadRequest``."""
    networks = tuple(_network(n, f"args.networks[{i}]", vtep) for i, n in enumerate(args["networks"]))
    scope = frozenset(args["scope"]) if args["scope"] is not None else None
    ids = [n.id for n in networks]
    if len(set(ids)) != len(ids):
        raise BadRequest("args.networks: a network is described twice")
    if scope is not None and not set(ids) <= scope:
        raise BadRequest("args.networks: a network outside args.scope is described")
    vnis = [s.vni for n in networks for s in n.subnets]
    if len(set(vnis)) != len(vnis):
        raise BadRequest("args.networks: a VNI is given to two subnets")
    described = args.get("security_groups", [])
    groups = {g.id: g for g in (_group(g, f"args.security_groups[{i}]") for i, g in enumerate(described))}
    if len(groups) != len(described):
        raise BadRequest("args.security_groups: a group is described twice")
    for n, network in enumerate(networks):
        for port in network.ports:
            for group_id in port.security_groups or ():
                if group_id not in groups:
                    raise BadRequest(f"args.networks[{n}]: port {port.id} names security group {group_id}, "
                                     "which args.security_groups does not describe")
    for group in groups.values():
        for rule in group.rules:
            if rule.remote_group is not None and (rule.remote_group not in groups
                                                  or groups[rule.remote_group].members is None):
                raise BadRequest(f"args.security_groups: group {group.id} names remote group {rule.remote_group}, "
                                 "whose members args.security_groups does not give")
    return DesiredState(scope, networks, args["revision"], groups)


def _group(raw: dict[str, Any], where: str) -> Group:
    rules = []
    for i, r in enumerate(raw["rules"]):
        here = f"{where}.rules[{i}]"
        ports, icmp = (r["port_min"], r["port_max"]), (r["icmp_type"], r["icmp_code"])
        if ports != (None, None):
            if r["protocol"] not in (TCP, UDP):
                raise BadRequest(f"{here}.port_min: ports are for tcp and udp only")
            if None in ports or ports[0] > ports[1]:
                raise BadRequest(f"{here}.port_max: not a range from port_min")
        if icmp != (None, None):
            if r["protocol"] != ICMP:
                raise BadRequest(f"{here}.icmp_type: ICMP types are for icmp only")
            if icmp[0] is None:
                raise BadRequest(f"{here}.icmp_code: a code needs its type")
        if r["remote_cidr"] is not None and r["remote_group"] is not None:
            raise BadRequest(f"{here}.remote_group: a remote CIDR or a remote group, not both")
        rules.append(Rule(r["direction"], r["protocol"], r["port_min"], r["port_max"], r["icmp_type"],
                          r["icmp_code"], r["remote_cidr"], r["remote_group"]))
    members = frozenset(raw["members"]) if raw["members"] is not None else None
    return Group(raw["id"], tuple(rules), members)


def _network(raw: dict[str, Any], where: str, vtep: str) -> DesiredNetwork:
    subnets = tuple(Subnet(s["id"], s["vni"], ipaddress.IPv4Network(s["cidr"]), s["gateway"], s["dhcp"],
                           tuple(s["dns_servers"])) for s in raw["subnets"])
    by_id = {s.id: s for s in subnets}
    for i, subnet in enumerate(subnets):
        if subnet.cidr.prefixlen > 29:
            raise BadRequest(f"{where}.subnets[{i}].cidr: smaller than /29")
        if ipaddress.IPv4Address(subnet.gateway) not in subnet.cidr:
            raise BadRequest(f"{where}.subnets[{i}].gateway: outside its subnet")
    for i, port in enumerate(raw["ports"]):
        on = by_id.get(port["subnet_id"])
        if on is None:
            raise BadRequest(f"{where}.ports[{i}].subnet_id: not a subnet of this network")
        if ipaddress.IPv4Address(port["ip"]) not in on.cidr:
            raise BadRequest(f"{where}.ports[{i}].ip: outside its subnet")
    if len({p["id"] for p in raw["ports"]}) != len(raw["ports"]):
        raise BadRequest(f"{where}.ports: a port is given twice")
    ports = tuple(LocalPort(p["id"], p["subnet_id"], p["mac"].lower(), p["ip"],
                            tuple(p["security_groups"]) if "security_groups" in p else None)
                  for p in raw["ports"] if p["vtep"] == vtep)
    remote = tuple(RemotePort(p["subnet_id"], p["mac"].lower(), p["ip"], p["vtep"])
                   for p in raw["ports"] if p["vtep"] != vtep)
    external = (External(ipaddress.IPv4Network(raw["external"]["cidr"]), raw["external"]["gateway"])
                if raw["external"] is not None else None)
    if (raw["snat"] or external is not None) and not raw["router"]:
        raise BadRequest(f"{where}.router: SNAT and an external network need a router")
    if external is not None and ipaddress.IPv4Address(external.gateway) not in external.cidr:
        raise BadRequest(f"{where}.external.gateway: outside the external network")
    known = {p["id"] for p in raw["ports"]}
    floating = tuple(FloatingIp(f["address"], f["port_id"]) for f in raw["floating_ips"])
    for i, fip in enumerate(floating):
        if external is None:
            raise BadRequest(f"{where}.floating_ips[{i}]: a floating IP needs the network's external network")
        if ipaddress.IPv4Address(fip.address) not in external.cidr:
            raise BadRequest(f"{where}.floating_ips[{i}].address: outside the external network")
        if fip.port_id not in known:
            raise BadRequest(f"{where}.floating_ips[{i}].port_id: not a port of this network")
    if len({f.address for f in floating}) != len(floating) or len({f.port_id for f in floating}) != len(floating):
        raise BadRequest(f"{where}.floating_ips: an address or a port is given twice")
    local = {p.id for p in ports}
    return DesiredNetwork(raw["id"], raw["router"], raw["snat"], external, subnets, ports, remote,
                          tuple(f for f in floating if f.port_id in local))
