"""Security groups on a hypervisor's ports: the filter and raw tables, ipsets and conntrack of its namespace.

``Firewall(netns).apply(state)`` converges the namespace on a ``FirewallState``
(``firewall_state.py``).  Only the ports the state lists are firewalled: any other port has no
chain, and its traffic passes as if there were no firewall.

- **Bridged packets through iptables.** ``net.bridge.bridge-nf-call-iptables=1`` (br_netfilter,
  a sysctl of each namespace) sends the IPv4 packets crossing a bridge through the filter
  table's FORWARD chain, where ``physdev`` tells the bridge port they came in by and leave by.
- **Two chains per port**, named from the port id, never from anything a user typed:
  ``cli<g><id>`` judges what goes to the port (ingress), ``clo<g><id>`` what comes from it
  (egress); ``<g>`` is a generation (``a`` or ``b``), ``<id>`` the port id's first 11 hex digits.
  ``cl-fw``, jumped to first from FORWARD, sends a port's packets to them by its tap.  They
  only ever drop or return: a packet between two firewalled ports of this host must pass the
  egress chain of one and the ingress chain of the other, and what they let through goes on
  through FORWARD (a hypervisor's FORWARD policy accepts).

  - egress: DHCP requests from the port's own MAC pass (before it has its address); DHCP
    replies (from UDP port 67) are dropped, the port is no DHCP server; a packet with another
    source MAC or IP than the port's is dropped; established and related flows pass, invalid
    packets are dropped; then the port's egress rules; anything else is dropped.
  - ingress: established and related flows pass, invalid packets are dropped; DHCP replies pass;
    then the port's ingress rules; anything else is dropped.
- **Atomic changes.** A port whose rules, MAC, IP or tap changed gets new chains under the other
  generation, and ``cl-fw``'s jumps move to them, in one commit of the filter table (libiptc
  replaces a table whole), which deletes the old chains too: a packet meets either the old
  chains or the new ones, so no established flow ever sees its port closed or open.
- **Remote groups** are ipsets (``hash:ip``) named ``clg<the group id's first 20 hex digits>``,
  made before a rule names them and updated in place, member by member (no chain changes); one
  no chain names any more is destroyed after the commit that stopped naming it.  The kernel
  holds 256 sets per namespace unless ``ip_set`` is loaded with a larger ``max_sets``.
- **Conntrack zones.** Tenants' addresses overlap, and this namespace tracks the bridged flows
  of every tenant: ``cl-zone`` (raw table, jumped to first from PREROUTING) puts the packets of
  each subnet bridge in its network's zone, so a flow of one tenant never matches an entry of
  another's, and never passes as another's established flow.
- **Ending flows.** When a port's rules change, or the members of a group its rules name, its
  flows are read from conntrack (in its zone) and those the new rules would not let start are
  deleted: their next packet is new, and the new chains judge it.  Flows still allowed keep
  their entries, so a change that does not concern them cuts nothing.

Each apply reads the kernel (which chains of ours exist, what ``cl-fw`` and ``cl-zone`` hold, the
sets' members) and changes only the difference; the rules of a port's chains, costly to decode,
are compared with what this object last wrote, and at its first apply (a restarted backend)
decoded and compared with what the state asks.  Chains and sets of ours that no port wants are
removed.  Every handle and socket lives for one apply: there is nothing to close.

- **IPv6.** The tenant networks are IPv4 and no rule can allow IPv6, so every IPv6 packet to or
  from a firewalled port is dropped (``bridge-nf-call-ip6tables=1``; ``cl-fw6`` from ip6tables'
  FORWARD, two physdev rules per port, converged like ``cl-fw``): a guest's router
  advertisements or IPv6 between guests never pass beside the groups.

- **Layer 2.** A firewalled port's frames with another source MAC, and its ARP claiming another
  MAC or IP, are dropped by nftables' bridge family (``portguard.py``): iptables sees no ARP.

A TCP flow whose entry was deleted may be picked up again mid-stream (``nf_conntrack_tcp_loose``)
if its next packet goes the way the rules let a flow start.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import iptc
import structlog
from pyroute2.ipset import IPSet
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.ipset import IPSET_ERR_FIND_TYPE
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

from .exceptions import BadRequest, FirewallError, KernelUnsupported
from .firewall_state import ICMP, TCP, UDP, FirewallState, PortFirewall, Rule
from .namespaces import run_in
from .netfilter import fresh_tables
from .portguard import PortGuard

__all__ = ["Firewall"]

log = structlog.get_logger("backend.network")

FORWARD_CHAIN, FORWARD6_CHAIN, ZONE_CHAIN = "cl-fw", "cl-fw6", "cl-zone"
#: a port's chain: its direction (i: to the port, o: from it), generation, the port id's first 11 hex digits
PORT_CHAIN = re.compile(r"cl([io])([ab])([0-9a-f]{11})\Z")
#: a remote group's set: the group id's first 20 hex digits (set names hold 31 characters)
GROUP_SET = re.compile(r"clg[0-9a-f]{20}\Z")
BRIDGE_SYSCTLS = "/proc/sys/net/bridge"
BRIDGE_NF_CALLS = ("/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables")
DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68
_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp"}


@dataclass(frozen=True, slots=True)
class _Flow:
    """A conntrack entry's original direction: what its first packet was."""

    protocol: int
    source: str
    destination: str
    #: TCP, UDP and the like: the ports; ICMP: None
    sport: int | None
    dport: int | None
    #: ICMP: the first packet's type and code
    icmp_type: int | None
    icmp_code: int | None


class Firewall:
    """The port firewall of one namespace: ``netns`` a name under /run/netns, or None for this process's."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._where = netns or "this namespace"
        self._lock = threading.Lock()
        #: per port (by its chains' id): the port as its chains enforce it, and their generation
        self._written: dict[str, tuple[PortFirewall, str]] = {}
        #: what ``cl-fw`` (per port: chain id, generation, tap) and ``cl-fw6`` (the taps) hold as this
        #: object last wrote them; None: read them from the kernel (decoding a rule is costly, and
        #: these chains grow with the host's ports)
        self._jumps_written: tuple[tuple[str, str, str], ...] | None = None
        self._guard = PortGuard(self._where)
        self._ipv6_written: tuple[str, ...] | None = None
        #: the remote-group sets and their members as this object last wrote them; None: list
        #: them from the kernel (a listing grows with every group's members)
        self._sets_written: dict[str, frozenset[str]] | None = None

    def apply(self, state: FirewallState) -> None:
        """Make the namespace firewall exactly ``state.ports``, as ``state`` says."""
        ports = _by_chain_id(state.ports)
        groups = _by_set_name(r.remote_group for p in ports.values() for r in p.rules if r.remote_group is not None)
        with self._lock:
            try:
                run_in(self.netns, lambda: self._apply(state, ports, groups))
            except BaseException:
                # The kernel may hold part of the change: compare with the kernel itself next time.
                self._written.clear()
                self._jumps_written = self._ipv6_written = self._sets_written = None
                raise

    def _apply(self, state: FirewallState, ports: dict[str, PortFirewall], groups: dict[str, str]) -> None:
        if ports:
            self._enable_bridge_netfilter()
        sets = {name: frozenset(state.members.get(group, frozenset())) for name, group in groups.items()}
        with self._ipset() as ipset:
            present = self._sets_written if self._sets_written is not None else self._present_sets(ipset)
            self._sets_written = None
            shrunk = self._converge_sets(ipset, present, sets, groups)
            rebuilt = self._converge_tables(ports, state.zones)
            self._guard.apply(ports.values())
            # only once no rule names them: a set in use cannot be destroyed
            self._destroy_stale_sets(ipset, set(present) - set(sets))
            self._sets_written = sets
        judged = [port for chain_id, port in sorted(ports.items())
                  if chain_id in rebuilt or any(r.remote_group is not None and _set_name(r.remote_group) in shrunk
                                                for r in port.rules)]
        if judged:
            self._end_flows(judged, state)

    # --- br_netfilter --------------------------------------------------------------------------

    def _enable_bridge_netfilter(self) -> None:
        if not os.path.isdir(BRIDGE_SYSCTLS):
            # Built as a module, br_netfilter is loaded by nothing else before its first use.
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["modprobe", "br_netfilter"], capture_output=True, timeout=30, check=False)
        if not os.path.isdir(BRIDGE_SYSCTLS):
            raise KernelUnsupported(f"firewall in {self._where}: no {BRIDGE_SYSCTLS}, so bridged packets cannot "
                                    "be filtered: the kernel needs br_netfilter (modprobe br_netfilter)")
        for path in BRIDGE_NF_CALLS:
            try:
                with open(path) as f:
                    if f.read().strip() == "1":
                        continue
                with open(path, "w") as f:
                    f.write("1")
            except OSError as exc:
                raise FirewallError(f"{path} in {self._where}: {exc.strerror}") from exc
            log.info("bridge_netfilter_enabled", sysctl=os.path.basename(path), netns=self._where)

    # --- ipsets --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _ipset(self) -> Iterator[Any]:
        with self._mapped("open ipset netlink"):
            ipset = IPSet()
        try:
            yield ipset
        finally:
            ipset.close()

    def _present_sets(self, ipset: Any) -> dict[str, frozenset[str]]:
        """The members of each set of ours (a big set's listing comes in several messages)."""
        present: dict[str, set[str]] = {}
        with self._mapped("list ipsets"):
            for msg in ipset.list():
                name = msg.get_attr("IPSET_ATTR_SETNAME")
                if not GROUP_SET.match(name or ""):
                    continue
                members = present.setdefault(name, set())
                adt = msg.get_attr("IPSET_ATTR_ADT")
                for data in adt.get_attrs("IPSET_ATTR_DATA") if adt is not None else ():
                    members.add(data.get_attr("IPSET_ATTR_IP_FROM").get_attr("IPSET_ATTR_IPADDR_IPV4"))
        return {name: frozenset(members) for name, members in present.items()}

    def _converge_sets(self, ipset: Any, present: Mapping[str, frozenset[str]], wanted: dict[str, frozenset[str]],
                       groups: dict[str, str]) -> set[str]:
        """Make each wanted set hold its members; the names of those that lost some (a member added
        only allows more, so the flows of the ports that name a grown set need no judging)."""
        shrunk = set()
        for name, members in sorted(wanted.items()):
            if name not in present:
                with self._mapped(f"create ipset {name} of group {groups[name]}"):
                    ipset.create(name, stype="hash:ip", family=socket.AF_INET)
                log.info("remote_group_set_created", group=groups[name], set=name, netns=self._where)
            have = present.get(name, frozenset())
            added, removed = sorted(members - have), sorted(have - members)
            for address in added:
                with self._mapped(f"add {address} to ipset {name}"):
                    ipset.add(name, address, etype="ip")
            for address in removed:
                with self._mapped(f"remove {address} from ipset {name}"):
                    ipset.delete(name, address, etype="ip")
            if removed:
                shrunk.add(name)
            if added or removed:
                log.info("remote_group_set_updated", group=groups[name], set=name, added=added, removed=removed,
                         netns=self._where)
        return shrunk

    def _destroy_stale_sets(self, ipset: Any, stale: set[str]) -> None:
        for name in sorted(stale):
            with self._mapped(f"destroy ipset {name}"):
                ipset.destroy(name)
            log.info("remote_group_set_destroyed", set=name, netns=self._where)

    # --- iptables ------------------------------------------------------------------------------

    def _converge_tables(self, ports: dict[str, PortFirewall], zones: Mapping[str, int]) -> set[str]:
        """Zones, then port chains, then the IPv6 drops; the ids of the ports whose chains were (re)built."""
        # With nothing to firewall, only the tables the namespace holds are looked at (for our
        # chains to remove): opening the others would make them, and put every packet through them.
        needed = ("raw", "filter") if ports or zones else ()
        with self._mapped("iptables"), fresh_tables(needed) as tables:
            missing = [name for name in needed if name not in tables]
            if missing:
                raise KernelUnsupported(f"firewall in {self._where}: the kernel has no {missing[0]} table "
                                        f"(iptable_{missing[0]})")
            if "raw" in tables:
                with self._mapped(f"raw table ({ZONE_CHAIN})"):
                    self._converge_zones(tables["raw"], zones)
            rebuilt = set()
            if "filter" in tables:
                with self._mapped(f"filter table ({FORWARD_CHAIN} and the chains of {len(ports)} ports)"):
                    rebuilt = self._converge_ports(tables["filter"], ports)
        self._converge_ipv6(ports)
        return rebuilt

    def _converge_ipv6(self, ports: dict[str, PortFirewall]) -> None:
        """Every IPv6 packet to or from a firewalled port dropped (``cl-fw6``, jumped to first from
        ip6tables' FORWARD): the tenant networks are IPv4 and no rule can let IPv6 in, so a
        guest's router advertisements, or IPv6 between guests, never pass beside the groups."""
        needed = ("filter",) if ports else ()
        with self._mapped(f"ip6tables filter table ({FORWARD6_CHAIN})"), \
                fresh_tables(needed, ipv6=True) as tables:
            table = tables.get("filter")
            if table is None:
                if ports:
                    raise KernelUnsupported(f"firewall in {self._where}: the kernel has no ip6tables filter table "
                                            "(ip6table_filter), so the IPv6 of firewalled ports cannot be dropped")
                return
            if not ports:
                self._ipv6_written = None
                if _remove_chain(table, FORWARD6_CHAIN, "FORWARD"):
                    table.commit()
                    log.info("port_ipv6_drop_removed_all", netns=self._where)
                return
            changed = _ensure_chain(table, FORWARD6_CHAIN, "FORWARD")
            taps = tuple(port.tap for _, port in sorted(ports.items()))
            chain = iptc.Chain(table, FORWARD6_CHAIN)
            if self._ipv6_written is None or changed:
                wanted = [rule for tap in taps for rule in _ipv6_drops(tap)]
                if _rule_set(chain.rules) != _rule_set(wanted):
                    chain.flush()
                    for rule in wanted:
                        chain.append_rule(rule)
                    changed = True
            elif taps != self._ipv6_written:
                before, after = set(self._ipv6_written), set(taps)
                for tap in sorted(before - after):
                    for rule in _ipv6_drops(tap):
                        chain.delete_rule(rule)
                for tap in sorted(after - before):
                    for rule in _ipv6_drops(tap):
                        chain.append_rule(rule)
                changed = True
            if changed:
                table.commit()
                log.info("port_ipv6_dropped", ports=len(ports), netns=self._where)
            self._ipv6_written = taps

    def _converge_zones(self, raw: Any, zones: Mapping[str, int]) -> None:
        if not zones:
            if _remove_chain(raw, ZONE_CHAIN, "PREROUTING"):
                raw.commit()
                log.info("conntrack_zones_removed", netns=self._where)
            return
        wanted = [_new_rule("CT", in_interface=bridge, target_params={"zone": str(zone)})
                  for bridge, zone in sorted(zones.items())]
        changed = _ensure_chain(raw, ZONE_CHAIN, "PREROUTING")
        chain = iptc.Chain(raw, ZONE_CHAIN)
        if [_decoded(r) for r in chain.rules] != [_decoded(r) for r in wanted]:
            chain.flush()
            for rule in wanted:
                chain.append_rule(rule)
            changed = True
        if changed:
            raw.commit()
            log.info("conntrack_zones_applied", zones=dict(sorted(zones.items())), netns=self._where)

    def _converge_ports(self, table: Any, ports: dict[str, PortFirewall]) -> set[str]:
        if not ports:
            self._remove_all(table)
            return set()
        changed = _ensure_chain(table, FORWARD_CHAIN, "FORWARD")
        fw = iptc.Chain(table, FORWARD_CHAIN)
        ours = {chain.name for chain in table.chains if PORT_CHAIN.match(chain.name)}
        # What this object wrote is what the chain holds (reading it back is costly: it grows with the host)
        jumped = {cid: g for cid, g, _ in self._jumps_written} if self._jumps_written is not None and not changed \
            else _jumped_generations(fw)
        generations: dict[str, str] = {}
        rebuilt: set[str] = set()
        for chain_id, port in sorted(ports.items()):
            current = jumped.get(chain_id)
            if current is not None and self._holds(table, ours, chain_id, current, port):
                generations[chain_id] = current
                continue
            generation = "b" if current == "a" else "a"
            with self._mapped(f"chains of port {port.port_id} (tap {port.tap})"):
                for direction, rules in (("i", _ingress(port)), ("o", _egress(port))):
                    name = _chain_name(direction, generation, chain_id)
                    if name in ours:
                        iptc.Chain(table, name).flush()  # left by a change that did not finish: nothing jumps to it
                    else:
                        table.create_chain(name)
                    chain = iptc.Chain(table, name)
                    for rule in rules:
                        chain.append_rule(rule)
            generations[chain_id] = generation
            rebuilt.add(chain_id)
        spec = tuple((chain_id, generations[chain_id], ports[chain_id].tap) for chain_id in sorted(ports))
        if self._jumps_written is None or changed:
            wanted_jumps = [rule for jump in spec for rule in _port_jumps(*jump)]
            if _rule_set(fw.rules) != _rule_set(wanted_jumps):
                fw.flush()
                for rule in wanted_jumps:
                    fw.append_rule(rule)
                changed = True
        elif spec != self._jumps_written:
            # Only the jumps of ports that came, went or moved to new chains: a host's other
            # ports cost nothing (the order of cl-fw's jumps does not matter: one tap each).
            before, after = set(self._jumps_written), set(spec)
            for jump in sorted(before - after):
                for rule in _port_jumps(*jump):
                    fw.delete_rule(rule)
            for jump in sorted(after - before):
                for rule in _port_jumps(*jump):
                    fw.append_rule(rule)
            changed = True
        wanted_chains = {_chain_name(d, g, chain_id) for chain_id, g in generations.items() for d in "io"}
        stale = sorted(ours - wanted_chains)
        for name in stale:
            iptc.Chain(table, name).flush()
            table.delete_chain(name)
        if rebuilt or stale or changed:
            table.commit()  # one commit: the new chains, the jumps to them, the old chains gone
        written, self._written = self._written, {chain_id: (ports[chain_id], g) for chain_id, g in generations.items()}
        self._jumps_written = spec
        for chain_id in sorted(rebuilt):
            port = ports[chain_id]
            log.info("port_firewall_applied", port=port.port_id, tap=port.tap, generation=generations[chain_id],
                     rules=len(port.rules), netns=self._where)
        for chain_id in sorted({_chain_id(name) for name in stale} - set(ports)):
            # Known only by its chains' id if it was firewalled before this object's first apply.
            removed = written.get(chain_id)
            log.info("port_firewall_removed", port=removed[0].port_id if removed else None, chains=chain_id,
                     netns=self._where)
        return rebuilt

    def _remove_all(self, table: Any) -> None:
        """No port firewalled here: no chain of ours stays in the filter table (the last port of a
        host that leaves takes the firewall with it, as its bridge and namespace go)."""
        stale = sorted(chain.name for chain in table.chains if PORT_CHAIN.match(chain.name))
        changed = _remove_chain(table, FORWARD_CHAIN, "FORWARD")
        for name in stale:
            iptc.Chain(table, name).flush()
            table.delete_chain(name)
        self._jumps_written = None
        if changed or stale:
            table.commit()
            self._written = {}
            log.info("port_firewall_removed_all", chains=len(stale), netns=self._where)

    def _holds(self, table: Any, ours: set[str], chain_id: str, generation: str, port: PortFirewall) -> bool:
        """Whether the chains of ``generation`` enforce ``port`` as it is now."""
        names = {d: _chain_name(d, generation, chain_id) for d in "io"}
        if not set(names.values()) <= ours:
            return False
        written = self._written.get(chain_id)
        if written is not None:
            return written == (port, generation)
        return all([_decoded(r) for r in iptc.Chain(table, names[d]).rules] == [_decoded(r) for r in wanted]
                   for d, wanted in (("i", _ingress(port)), ("o", _egress(port))))

    # --- conntrack -----------------------------------------------------------------------------

    def _end_flows(self, ports: list[PortFirewall], state: FirewallState) -> None:
        """Delete the flows of ``ports`` that their rules no longer allow (in each port's zone).

        A port's zone is its bridge's, as the driver plugged it: a shrunk remote group judges
        every port that names it, and looking each tap up in the kernel made removing one port
        cost as much as the host has ports."""
        by_zone: dict[int, list[PortFirewall]] = {}
        for port in ports:
            # A bridge without a zone (none should be) leaves its flows in the default zone, 0.
            by_zone.setdefault(state.zones.get(port.bridge, 0), []).append(port)
        with self._mapped("open conntrack netlink"):
            ct = NFCTSocket()
        try:
            for zone, zone_ports in sorted(by_zone.items()):
                self._end_flows_in(ct, zone, zone_ports, state.members)
        finally:
            ct.close()

    def _end_flows_in(self, ct: Any, zone: int, ports: list[PortFirewall],
                      members: Mapping[str, frozenset[str]]) -> None:
        by_ip = {port.ip: port for port in ports}
        with self._mapped(f"list conntrack zone {zone}"):
            # Read whole before deleting: pyroute2 cannot send a request while a dump is being read.
            # The kernel filters by zone, but not for zone 0, which asks for every zone.
            entries = [msg for msg in ct.dump(zone=zone) if (msg.get_attr("CTA_ZONE") or 0) == zone]
        ended = {port.port_id: 0 for port in ports}
        kept = dict(ended)
        for msg in entries:
            original = msg.get_attr("CTA_TUPLE_ORIG")
            flow = _flow(original)
            for ip, egress in ((flow.source, True), (flow.destination, False)):
                port = by_ip.get(ip)
                if port is None:
                    continue
                if _allows(port, flow, egress, members):
                    kept[port.port_id] += 1
                    continue
                try:
                    ct.entry("del", tuple_orig=_request_tuple(original), zone=zone)
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:  # it ended on its own meanwhile
                        raise FirewallError(f"end flow {flow} of port {port.port_id} in zone {zone} in "
                                            f"{self._where}: {exc}") from exc
                ended[port.port_id] += 1
                break
        for port in ports:
            if ended[port.port_id]:
                log.info("conntrack_flows_ended", port=port.port_id, zone=zone, ended=ended[port.port_id],
                         kept=kept[port.port_id], netns=self._where)

    # --- errors --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except (iptc.IPTCError, iptc.XTablesError) as exc:
            raise FirewallError(f"{what} in {self._where}: {exc}") from exc
        except NetlinkError as exc:
            if exc.code == IPSET_ERR_FIND_TYPE:
                raise KernelUnsupported(f"{what} in {self._where}: the kernel has no hash:ip ipsets") from exc
            raise FirewallError(f"{what} in {self._where}: {exc}") from exc


# --- names ------------------------------------------------------------------------------------------

def _by_chain_id(ports: Iterable[PortFirewall]) -> dict[str, PortFirewall]:
    out: dict[str, PortFirewall] = {}
    for port in ports:
        chain_id = port.port_id.replace("-", "").lower()[:11]
        if not re.fullmatch(r"[0-9a-f]{11}", chain_id):
            raise BadRequest(f"firewall: port {port.port_id!r} is not a UUID")
        if chain_id in out:
            raise BadRequest(f"firewall: ports {out[chain_id].port_id} and {port.port_id} share their first 11 hex "
                             "digits, which name their chains")
        out[chain_id] = port
    return out


def _chain_name(direction: str, generation: str, chain_id: str) -> str:
    return f"cl{direction}{generation}{chain_id}"


def _chain_id(chain_name: str) -> str:
    return chain_name[-11:]


def _by_set_name(group_ids: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for group_id in sorted(set(group_ids)):
        name = _set_name(group_id)
        if name in out:
            raise BadRequest(f"firewall: remote groups {out[name]} and {group_id} share their first 20 hex digits, "
                             "which name their sets")
        out[name] = group_id
    return out


def _set_name(group_id: str) -> str:
    digits = group_id.replace("-", "").lower()[:20]
    if not re.fullmatch(r"[0-9a-f]{20}", digits):
        raise BadRequest(f"firewall: remote group {group_id!r} is not a UUID")
    return f"clg{digits}"


# --- rules ------------------------------------------------------------------------------------------

def _new_rule(target: str, *, protocol: int | None = None, src: str | None = None, dst: str | None = None,
              in_interface: str | None = None, matches: Iterable[tuple[str, dict[str, Any]]] = (),
              target_params: Mapping[str, str] | None = None, ipv6: bool = False) -> Any:
    rule = iptc.Rule6() if ipv6 else iptc.Rule()
    if protocol is not None:
        rule.protocol = _NAMES.get(protocol, str(protocol))
    if src is not None:
        rule.src = src
    if dst is not None:
        rule.dst = dst
    if in_interface is not None:
        rule.in_interface = in_interface
    for name, params in matches:
        match = rule.create_match(name)
        for key, value in params.items():
            setattr(match, key, value)
    made = rule.create_target(target)
    for key, value in (target_params or {}).items():
        setattr(made, key, value)
    return rule


def _decoded(rule: Any) -> dict[str, Any]:
    """A rule as iptables-save would print it (less its counters): comparable between a rule built
    here and one read from the kernel."""
    decoded: dict[str, Any] = iptc.easy.decode_iptc_rule(rule, ipv6=isinstance(rule, iptc.Rule6))
    decoded.pop("counters", None)
    return decoded


def _ensure_chain(table: Any, name: str, builtin: str) -> bool:
    """``name`` exists and ``builtin`` jumps to it first, and only there; whether that took a change."""
    changed = False
    if not table.is_chain(name):
        table.create_chain(name)
        changed = True
    hook = iptc.Chain(table, builtin)
    rules = hook.rules
    jumps = [rule for rule in rules if rule.target.name == name]
    if len(jumps) == 1 and rules[0].target.name == name and _decoded(rules[0]) == {"target": name}:
        return changed
    for rule in jumps:
        hook.delete_rule(rule)
    hook.insert_rule(_new_rule(name, ipv6=isinstance(table, iptc.Table6)))
    return True


def _remove_chain(table: Any, name: str, builtin: str) -> bool:
    """``name`` and ``builtin``'s jumps to it gone (uncommitted); whether there was anything."""
    if not table.is_chain(name):
        return False
    hook = iptc.Chain(table, builtin)
    for rule in [rule for rule in hook.rules if rule.target.name == name]:
        hook.delete_rule(rule)
    iptc.Chain(table, name).flush()
    table.delete_chain(name)
    return True


def _jumped_generations(fw: Any) -> dict[str, str]:
    """Per port (by chain id): the generation ``cl-fw`` sends its packets to."""
    out: dict[str, str] = {}
    for rule in fw.rules:
        match = PORT_CHAIN.match(rule.target.name or "")
        if match:
            out.setdefault(match.group(3), match.group(2))
    return out


def _port_jumps(chain_id: str, generation: str, tap: str) -> list[Any]:
    """``cl-fw``'s two jumps for one port: what comes from its tap, what goes to it."""
    return [_new_rule(_chain_name("o", generation, chain_id),
                      matches=[("physdev", {"physdev_in": tap, "physdev_is_bridged": ""})]),
            _new_rule(_chain_name("i", generation, chain_id),
                      matches=[("physdev", {"physdev_out": tap, "physdev_is_bridged": ""})])]


def _ipv6_drops(tap: str) -> list[Any]:
    return [_new_rule("DROP", ipv6=True, matches=[("physdev", {side: tap, "physdev_is_bridged": ""})])
            for side in ("physdev_in", "physdev_out")]


def _rule_set(rules: Iterable[Any]) -> list[str]:
    """Rules as a sorted list: for chains whose order does not matter."""
    return sorted(json.dumps(_decoded(rule), sort_keys=True) for rule in rules)


def _ingress(port: PortFirewall) -> list[Any]:
    return [
        _new_rule("RETURN", matches=[("conntrack", {"ctstate": "RELATED,ESTABLISHED"})]),
        _new_rule("DROP", matches=[("conntrack", {"ctstate": "INVALID"})]),
        _new_rule("RETURN", protocol=UDP,
                  matches=[("udp", {"sport": str(DHCP_SERVER_PORT), "dport": str(DHCP_CLIENT_PORT)})]),
        *(_allow(rule, egress=False) for rule in port.rules if rule.direction == "ingress"),
        _new_rule("DROP"),
    ]


def _egress(port: PortFirewall) -> list[Any]:
    # The source checks come before the established flows: a spoofed packet must not pass as
    # part of another port's established flow.
    return [
        _new_rule("RETURN", protocol=UDP, matches=[
            ("mac", {"mac_source": port.mac}),
            ("udp", {"sport": str(DHCP_CLIENT_PORT), "dport": str(DHCP_SERVER_PORT)})]),
        _new_rule("DROP", protocol=UDP, matches=[("udp", {"sport": str(DHCP_SERVER_PORT)})]),
        _new_rule("DROP", matches=[("mac", {"mac_source": f"!{port.mac}"})]),
        _new_rule("DROP", src=f"!{port.ip}/32"),
        _new_rule("RETURN", matches=[("conntrack", {"ctstate": "RELATED,ESTABLISHED"})]),
        _new_rule("DROP", matches=[("conntrack", {"ctstate": "INVALID"})]),
        *(_allow(rule, egress=True) for rule in port.rules if rule.direction == "egress"),
        _new_rule("DROP"),
    ]


def _allow(rule: Rule, egress: bool) -> Any:
    """What ``rule`` lets start, from the port (``egress``) or to it."""
    protocol = _protocol(rule)
    matches: list[tuple[str, dict[str, Any]]] = []
    ports = _port_range(rule)
    if ports is not None and protocol in (TCP, UDP):
        low, high = ports
        matches.append((_NAMES[protocol], {"dport": str(low) if low == high else f"{low}:{high}"}))
    if rule.icmp_type is not None and protocol == ICMP:
        kind = str(rule.icmp_type) if rule.icmp_code is None else f"{rule.icmp_type}/{rule.icmp_code}"
        matches.append(("icmp", {"icmp_type": kind}))
    if rule.remote_group is not None:
        matches.append(("set", {"match_set": [_set_name(rule.remote_group), "dst" if egress else "src"]}))
    remote = str(ipaddress.IPv4Network(rule.remote_cidr, strict=False)) if rule.remote_cidr is not None else None
    return _new_rule("RETURN", protocol=protocol, matches=matches,
                     dst=remote if egress else None, src=None if egress else remote)


def _protocol(rule: Rule) -> int | None:
    """The rule's protocol; 0 is "any", as iptables reads it."""
    return rule.protocol or None


def _port_range(rule: Rule) -> tuple[int, int] | None:
    if rule.port_min is None and rule.port_max is None:
        return None
    low = rule.port_min if rule.port_min is not None else 1
    return low, rule.port_max if rule.port_max is not None else low


# --- flows ------------------------------------------------------------------------------------------

def _flow(original: Any) -> _Flow:
    ip = original.get_attr("CTA_TUPLE_IP")
    proto = original.get_attr("CTA_TUPLE_PROTO")
    return _Flow(protocol=proto.get_attr("CTA_PROTO_NUM"), source=ip.get_attr("CTA_IP_V4_SRC"),
                 destination=ip.get_attr("CTA_IP_V4_DST"), sport=proto.get_attr("CTA_PROTO_SRC_PORT"),
                 dport=proto.get_attr("CTA_PROTO_DST_PORT"), icmp_type=proto.get_attr("CTA_PROTO_ICMP_TYPE"),
                 icmp_code=proto.get_attr("CTA_PROTO_ICMP_CODE"))


def _request_tuple(original: Any) -> dict[str, Any]:
    """A dumped entry's original tuple, as a request naming that entry: every field it has (ports,
    ICMP id, type and code), whatever its protocol."""
    return {"attrs": [[name, {"attrs": [[k, v] for k, v in original.get_attr(name)["attrs"]]}]
                      for name in ("CTA_TUPLE_IP", "CTA_TUPLE_PROTO")]}


def _allows(port: PortFirewall, flow: _Flow, egress: bool, members: Mapping[str, frozenset[str]]) -> bool:
    """Whether the port's chains would let ``flow``'s first packet through now (the source checks
    aside: conntrack holds the flow, so its first packet passed them)."""
    dhcp = flow.protocol == UDP and flow.sport is not None and flow.dport is not None
    if egress:
        if dhcp and flow.sport == DHCP_SERVER_PORT:
            return False
        if dhcp and (flow.sport, flow.dport) == (DHCP_CLIENT_PORT, DHCP_SERVER_PORT):
            return True
    elif dhcp and (flow.sport, flow.dport) == (DHCP_SERVER_PORT, DHCP_CLIENT_PORT):
        return True
    remote = flow.destination if egress else flow.source
    direction = "egress" if egress else "ingress"
    return any(_rule_allows(rule, flow, remote, members) for rule in port.rules if rule.direction == direction)


def _rule_allows(rule: Rule, flow: _Flow, remote: str, members: Mapping[str, frozenset[str]]) -> bool:
    protocol = _protocol(rule)
    if protocol is not None and protocol != flow.protocol:
        return False
    ports = _port_range(rule)
    if ports is not None and protocol in (TCP, UDP):
        if flow.dport is None or not ports[0] <= flow.dport <= ports[1]:
            return False
    if rule.icmp_type is not None and protocol == ICMP:
        if flow.icmp_type != rule.icmp_type or (rule.icmp_code is not None and flow.icmp_code != rule.icmp_code):
            return False
    if rule.remote_cidr is not None:
        if ipaddress.IPv4Address(remote) not in ipaddress.IPv4Network(rule.remote_cidr, strict=False):
            return False
    return rule.remote_group is None or remote in members.get(rule.remote_group, frozenset())
