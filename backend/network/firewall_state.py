"""What a hypervisor's port firewalls should be: security groups as the firewall driver takes them.

Built by the network driver from the ``net.sync`` bodies it holds (each local port with the
union of its groups' rules, each remote group's member addresses, each subnet bridge's
conntrack zone), and given whole to ``firewall.apply``, which converges the kernel on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ICMP", "TCP", "UDP", "FirewallState", "PortFirewall", "Rule"]

#: IP protocol numbers the rules single out (ports for TCP and UDP, type and code for ICMP)
ICMP, TCP, UDP = 1, 6, 17


@dataclass(frozen=True, slots=True)
class Rule:
    """One allowed flow, as seen from the port: ``ingress`` to it, ``egress`` from it."""

    direction: str
    #: an IP protocol number; None: any protocol
    protocol: int | None = None
    #: TCP and UDP only: the destination port range (both None: every port)
    port_min: int | None = None
    port_max: int | None = None
    #: ICMP only (None: every type / every code of the type)
    icmp_type: int | None = None
    icmp_code: int | None = None
    #: the other end: a CIDR, or the members of a group (``FirewallState.members``); neither: anywhere
    remote_cidr: str | None = None
    remote_group: str | None = None


@dataclass(frozen=True, slots=True)
class PortFirewall:
    port_id: str
    #: the port's device in its subnet's bridge
    tap: str
    #: that bridge: its conntrack zone (``FirewallState.zones``) holds the port's flows
    bridge: str
    mac: str
    ip: str
    #: the union of the rules of its security groups; none: everything but the port's own DHCP is dropped
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class FirewallState:
    #: every port of this host that is firewalled
    ports: tuple[PortFirewall, ...] = ()
    #: per remote group named by a rule of ``ports``: its members' addresses (across the cloud)
    members: dict[str, frozenset[str]] = field(default_factory=dict)
    #: per subnet bridge of this host: the conntrack zone of its network on this host
    zones: dict[str, int] = field(default_factory=dict)
