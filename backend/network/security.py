"""Security groups on a hypervisor: from the ``net.sync`` bodies the driver holds to the firewall.

The driver hands over, after each sync, its local ports by network (with their groups) and the
groups the body described; this module keeps the newest description of each group and each
remote group's members, gives each network a conntrack zone on this host, and applies the
whole firewall state (``firewall.Firewall``), which converges the kernel on it.

Zones are per network and per host (16 bits: a cloud has more networks than that, a host does
not): allocated lowest-free and kept in ``zones.json`` under the driver's state directory, so a
restarted backend gives a network the zone its connections are tracked in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol

import structlog

from service.files import write_atomic

from .exceptions import NetworkError
from .firewall_state import FirewallState, PortFirewall, Rule
from .spec import DesiredState, LocalPort

__all__ = ["PortSecurity"]

log = structlog.get_logger("backend.network")

#: conntrack zones this host hands out (0 is the kernel's default zone: never a network's)
MIN_ZONE, MAX_ZONE = 1, 65535


class Applier(Protocol):
    def apply(self, state: FirewallState) -> None: ...


class PortSecurity:
    def __init__(self, state_dir: Path, firewall: Callable[[], Applier]) -> None:
        self._zones_path = state_dir / "zones.json"
        self._zones: dict[str, int] = _read_zones(self._zones_path)
        self._make_firewall = firewall
        self._firewall: Applier | None = None
        #: per group: (revision of the body that described it, its rules)
        self._rules: dict[str, tuple[int, tuple[Rule, ...]]] = {}
        #: per remote group: (revision, its members' addresses)
        self._members: dict[str, tuple[int, frozenset[str]]] = {}

    def learn(self, desired: DesiredState) -> None:
        """Keep the groups ``desired`` describes, unless a newer body described them already."""
        for group in desired.groups.values():
            if self._rules.get(group.id, (-1, ()))[0] <= desired.revision:
                self._rules[group.id] = (desired.revision, group.rules)
            if group.members is not None and self._members.get(group.id, (-1, frozenset()))[0] <= desired.revision:
                self._members[group.id] = (desired.revision, group.members)

    def apply(self, ports: Mapping[str, Mapping[str, tuple[str, LocalPort]]], full: bool) -> None:
        """Firewall the local ports (per network: by tap, their bridge and port), and nothing else.

        ``full``: the driver has just converged on all of its networks, so stale chains and sets
        of an earlier life are cleared even if no port here is firewalled."""
        self._zone_networks(ports)
        firewalled = [(network_id, tap, bridge, port) for network_id, taps in sorted(ports.items())
                      for tap, (bridge, port) in sorted(taps.items()) if port.security_groups is not None]
        if not firewalled and self._firewall is None and not full:
            return
        state = self._state(firewalled)
        if self._firewall is None:
            self._firewall = self._make_firewall()
        self._firewall.apply(state)

    def _state(self, firewalled: Iterable[tuple[str, str, str, LocalPort]]) -> FirewallState:
        port_rules = []
        zones: dict[str, int] = {}
        remote: set[str] = set()
        for network_id, tap, bridge, port in firewalled:
            rules: list[Rule] = []
            for group_id in port.security_groups or ():
                rules.extend(r for r in self._rules.get(group_id, (0, ()))[1] if r not in rules)
            remote.update(r.remote_group for r in rules if r.remote_group is not None)
            port_rules.append(PortFirewall(port.id, tap, bridge, port.mac, port.ip, tuple(rules)))
            zones[bridge] = self._zones[network_id]
        members = {g: self._members.get(g, (0, frozenset[str]()))[1] for g in sorted(remote)}
        return FirewallState(tuple(port_rules), members, zones)

    def _zone_networks(self, ports: Mapping[str, object]) -> None:
        """A zone for each network with ports here; networks gone give theirs back."""
        wanted = set(ports)
        changed = False
        for network_id in sorted(set(self._zones) - wanted):
            del self._zones[network_id]
            changed = True
        used = set(self._zones.values())
        for network_id in sorted(wanted - set(self._zones)):
            zone = next((z for z in range(MIN_ZONE, MAX_ZONE + 1) if z not in used), None)
            if zone is None:
                raise NetworkError(f"no conntrack zone left on this host for network {network_id}")
            self._zones[network_id] = zone
            used.add(zone)
            changed = True
            log.info("conntrack_zone_given", network=network_id, zone=zone)
        if changed:
            write_atomic(self._zones_path, json.dumps(self._zones, sort_keys=True).encode())


def _read_zones(path: Path) -> dict[str, int]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("conntrack_zones_unreadable", path=str(path), error=str(exc))
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int) and MIN_ZONE <= v <= MAX_ZONE}
