"""The network ops' semantics (``docs/ops.md``, ``docs/network.md``): converge a host on its desired state.

``sync`` is the one way in.  It reads what the host has, builds what is missing, changes what
differs and removes what is no longer wanted, and touches nothing else: a port whose network
did not change keeps its bridge, its FDB entries and its DHCP server, and so its traffic.
Applying the same state twice changes nothing; removing a network's last port on the host
removes everything of the network there.

On a host, per network with a port here: a router namespace (``<prefix>router-<network id>``);
per subnet of it (every subnet when the network has a router, so that routing between them is
local; else the subnets with a port here): a bridge ``clb<vni>``, a VXLAN device ``clx<vni>``
in it, and a veth ``clg<vni>`` (in the bridge) / ``sn<vni>`` (in the namespace, holding the
gateway address with this host's own MAC for the subnet).  Per local port, its tap in the
bridge; per remote port, an FDB entry (MAC -> VTEP) and a permanent neighbour (IP -> MAC) on
the VXLAN device, which answers ARP for it locally.  Per subnet with DHCP, a dnsmasq.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ..ports import tap_name
from . import names
from .dhcp import DhcpServer, Dnsmasq
from .exceptions import BadRequest, LinkNotFound, NetworkError
from .firewall import Firewall
from .netfilter import HostEgress, RouterNat, apply_host_egress, apply_router_nat
from .netlink import Link, Netlink, create_namespace, namespaces, remove_namespace
from .security import PortSecurity
from .spec import DesiredNetwork, DesiredState, LocalPort, Subnet

__all__ = ["NetworkDriver", "NetworkSettings", "VXLAN_OVERHEAD"]

log = structlog.get_logger("backend.network")

#: outer Ethernet, IPv4, UDP and VXLAN headers: what a segment's MTU gives up to the underlay's
VXLAN_OVERHEAD = 50
#: seconds between the watcher's rounds (dead dnsmasqs, taps that came back)
WATCH_INTERVAL_S = 2.0
#: a router namespace's routing table for the sources that have a floating IP
FLOATING_TABLE = 100
FLOATING_RULE_PRIORITY = 1000
#: a floating IP's gratuitous ARP goes out at once, then again after each of these pauses: a
#: neighbour ignores a new MAC that comes within its locktime (1 s) of the entry's last update,
#: as when the outside just reached the address at its old host (seen in CI)
ANNOUNCE_AGAIN_S = (1.1, 1.1)


@dataclass(frozen=True)
class NetworkSettings:
    #: this hypervisor's node id: gateway MACs are derived from it
    host: str
    #: this hypervisor's underlay address: the local end of every VXLAN tunnel
    vtep: str
    state_dir: Path
    underlay_mtu: int = 1500
    vxlan_port: int = 4789
    #: starts the name of every namespace the driver makes: hypervisors sharing a kernel
    #: (namespace hypervisors on one machine) need one each
    namespace_prefix: str = "cl-"
    #: the namespace the driver works in: None for its process's own (a hypervisor's backend)
    netns: str | None = None
    #: where instances' taps appear when libvirtd runs in another namespace than this driver
    #: (a name under /run/netns or a path like /proc/1/ns/net); None: they appear here
    tap_netns: str | None = None
    #: the host's interface on the external network: routers' floating IPs are plugged into
    #: it (a bridge), and their SNATed egress leaves by it; None: this host offers neither
    external_interface: str | None = None
    #: link-local /30s, one per router with SNAT on this host, between it and the host
    transit_cidr: str = "169.254.192.0/18"

    @property
    def mtu(self) -> int:
        return self.underlay_mtu - VXLAN_OVERHEAD


@dataclass
class _Wanted:
    """One network as this host builds it."""

    network: DesiredNetwork
    namespace: str
    subnets: list[Subnet] = field(default_factory=list)


class NetworkDriver:
    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self._dhcp = Dnsmasq(settings.state_dir / "dhcp")
        self._lock = threading.Lock()
        #: per network, the local ports of the last sync by tap, with their bridge: the watcher
        #: plugs a tap that reappears (libvirt makes a new one at every start of the guest)
        self._taps: dict[str, dict[str, tuple[str, LocalPort]]] = {}
        #: per tap of a port, the (ifindex, MAC) pin this driver wrote: a sync re-pins only a tap
        #: made anew (a new index), not every port it holds (one netlink call each, growing with the host)
        self._pinned: dict[str, tuple[int, str]] = {}
        #: the networks converged whole or step by step since this driver started, with no
        #: failure since: a sync scoped to one of them looks only at the ports that changed
        self._converged: set[str] = set()
        #: per VXLAN device, the (FDB, neighbour) entries this driver last wrote to it: the
        #: remote ports' entries are read back from the kernel only on a thorough sync
        self._forwarding: dict[str, tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        #: the host forwards and masquerades its routers' egress (set up once, at the first need)
        self._egress_ready = False
        #: per network, the revision of the last body applied to it (removals included); a full
        #: sync's revision holds for every network, also those it does not name
        self._revisions: dict[str, int] = {}
        self._full_revision = 0
        self._security = PortSecurity(settings.state_dir, lambda: Firewall(settings.netns))

    # --- lifecycle -----------------------------------------------------------------------------

    def start_watching(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="net-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self._dhcp.close()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                self.watch_once()
            except Exception as exc:  # the watcher must outlive any one bad round
                log.warning("network_watch_failed", error=str(exc))

    def watch_once(self) -> None:
        with self._lock:
            self._dhcp.watch()
            taps = {tap: v for ports in self._taps.values() for tap, v in ports.items()}
            if not taps:
                return
            with Netlink(self.settings.netns) as nl:
                links = nl.links()
                for tap, (bridge, port) in taps.items():
                    if bridge in links:
                        self._plug(nl, links.get(tap), tap, bridge, port)

    # --- sync ----------------------------------------------------------------------------------

    def sync(self, desired: DesiredState) -> dict[str, Any]:
        with self._lock, Netlink(self.settings.netns) as nl:
            prefix = names.router_namespace(self.settings.namespace_prefix, "")
            present = {ns[len(prefix):] for ns in namespaces() if ns.startswith(prefix)}
            wanted = {w.network.id: w for w in (self._wanted(n) for n in desired.networks) if w is not None}
            if self.settings.external_interface is None:
                for w in wanted.values():
                    if w.network.snat or w.network.floating_ips:
                        raise BadRequest(f"network {w.network.id}: SNAT and floating IPs need an external network, "
                                         "and this host has none (network.external_interface)")
            scope = desired.scope if desired.scope is not None else present | set(wanted)
            stale = {n for n in scope if max(self._revisions.get(n, 0), self._full_revision) > desired.revision}
            if stale:
                # built before what this host already applied: the newer state stands
                log.info("network_sync_stale", networks=sorted(stale), revision=desired.revision)
                scope -= stale
                wanted = {k: v for k, v in wanted.items() if k not in stale}
            for network_id in scope:
                self._revisions[network_id] = desired.revision
            for network_id in scope - set(wanted):
                self._taps.pop(network_id, None)
                self._converged.discard(network_id)
            if desired.scope is None and not stale:
                self._full_revision = desired.revision
            for network_id in sorted(scope & present - set(wanted)):
                self._remove_network(nl, network_id)
            for w in wanted.values():
                # A full sync re-reads everything (it is how a host catches up after a restart or
                # a failure); a scoped one trusts what this driver wrote since, so that adding a
                # port costs the same on a host with one port or a thousand.
                thorough = desired.scope is None or w.network.id not in self._converged
                self._converged.discard(w.network.id)
                self._converge_network(nl, w, thorough)
                self._converged.add(w.network.id)
            if desired.scope is None and not stale:
                self._remove_strays(nl, {s.vni for w in wanted.values() for s in w.subnets}, set(wanted))
            if any(w.network.snat for w in wanted.values()) and not self._egress_ready:
                self._prepare_egress(nl)
            ours = {tap for ports in self._taps.values() for tap in ports}
            self._pinned = {tap: pin for tap, pin in self._pinned.items() if tap in ours}
            self._security.learn(desired)
            self._security.apply(self._taps, full=desired.scope is None and not stale)
            return {"networks": sorted(wanted), "stale": sorted(stale)}

    def _wanted(self, network: DesiredNetwork) -> _Wanted | None:
        if not network.ports:
            return None  # no port here: the host keeps nothing of the network
        local = {p.subnet_id for p in network.ports}
        subnets = [s for s in network.subnets if network.router or s.id in local]
        return _Wanted(network, names.router_namespace(self.settings.namespace_prefix, network.id), subnets)

    def _converge_network(self, nl: Netlink, w: _Wanted, thorough: bool) -> None:
        if w.namespace not in namespaces():
            create_namespace(w.namespace)
            log.info("router_namespace_created", network=w.network.id, namespace=w.namespace)
            thorough = True
        with Netlink(w.namespace) as rnl:
            rlinks = rnl.links()
            if not rlinks["lo"].up:
                rnl.set_up("lo")
            wanted_vnis = {s.vni for s in w.subnets}
            for name in rlinks:
                vni = _leg_vni(name)
                if vni is not None and vni not in wanted_vnis:
                    self._remove_subnet(nl, vni)
            for subnet in w.subnets:
                self._converge_subnet(nl, rnl, rlinks, w.namespace, subnet)
            rnl.sysctl("net.ipv4.ip_forward", "1" if w.network.router else "0")
            self._converge_outward(nl, rnl, w)
        self._converge_ports(nl, w, thorough)
        for subnet in w.subnets:
            self._converge_forwarding(nl, w.network, subnet, thorough)
            self._converge_dhcp(w, subnet)

    def _converge_ports(self, nl: Netlink, w: _Wanted, thorough: bool) -> None:
        """Each local port's tap in its subnet's bridge, and no other tap in the network's bridges."""
        by_id = {s.id: s for s in w.subnets}
        wanted = {tap_name(p.id): (names.bridge(by_id[p.subnet_id].vni), p) for p in w.network.ports}
        bridges = {names.bridge(s.vni) for s in w.subnets}
        before = self._taps.get(w.network.id, {})
        if thorough:
            links = nl.links()
            for tap, (bridge, port) in wanted.items():
                self._plug(nl, links.get(tap), tap, bridge, port)
            strays = [link for link in links.values()
                      if link.master in bridges and link.name.startswith("tap") and link.name not in wanted]
        else:
            # The ports of the last sync are plugged and pinned (the watcher plugs the taps that
            # come back): only those that came or changed since are looked up, one by one.
            for tap, (bridge, port) in wanted.items():
                if before.get(tap) != (bridge, port) or tap not in self._pinned:
                    self._plug(nl, nl.link(tap), tap, bridge, port)
            bridges |= {bridge for bridge, _port in before.values()}
            strays = [link for tap in sorted(before.keys() - wanted.keys())
                      if (link := nl.link(tap)) is not None and link.master in bridges]
        for link in strays:
            nl.set_master(link.name, None)
            log.info("port_unplugged", tap=link.name, bridge=link.master)
        self._taps[w.network.id] = wanted

    def _converge_subnet(self, nl: Netlink, rnl: Netlink, rlinks: dict[str, Link], namespace: str,
                         subnet: Subnet) -> None:
        s = self.settings
        bridge, vxlan = names.bridge(subnet.vni), names.vxlan(subnet.vni)
        host_leg, router_leg = names.gateway_leg(subnet.vni), names.router_leg(subnet.vni)
        links = {name: link for name in (bridge, vxlan, host_leg) if (link := nl.link(name)) is not None}
        if bridge not in links:
            nl.add_bridge(bridge, s.mtu)
            log.info("segment_created", vni=subnet.vni, subnet=subnet.id)
        want_vxlan = (subnet.vni, s.vtep, s.vxlan_port, False, True)
        if vxlan in links and links[vxlan].vxlan != want_vxlan:
            nl.delete_link(vxlan)  # made for another VTEP or port: its settings cannot change in place
            del links[vxlan]
        if vxlan not in links:
            self._forwarding.pop(vxlan, None)
            nl.add_vxlan(vxlan, subnet.vni, s.vtep, s.vxlan_port, s.mtu)
        if links.get(vxlan) is None or links[vxlan].master != bridge:
            nl.set_master(vxlan, bridge)
        mac = names.gateway_mac(s.host, subnet.id)
        if (host_leg in links) != (router_leg in rlinks) or (router_leg in rlinks and rlinks[router_leg].mac != mac):
            nl.delete_link(host_leg)  # half a veth (or one with another MAC) is rebuilt whole
            links.pop(host_leg, None)
            rlinks.pop(router_leg, None)
        if host_leg not in links:
            nl.add_veth(host_leg, router_leg, namespace, s.mtu, peer_mac=mac)
        if links.get(host_leg) is None or links[host_leg].master != bridge:
            nl.set_master(host_leg, bridge)
        for name in (bridge, vxlan, host_leg):
            link = links.get(name)
            if link is None or not link.up or link.mtu != s.mtu:
                nl.set_up(name, s.mtu)
        if router_leg not in rlinks or not rlinks[router_leg].up:
            rnl.set_up(router_leg)
        gateway = (subnet.gateway, subnet.cidr.prefixlen)
        present = rnl.addresses(router_leg)
        for address in present - {gateway}:
            rnl.address_del(router_leg, *address)
        if gateway not in present:
            rnl.address_add(router_leg, *gateway)

    def _converge_outward(self, nl: Netlink, rnl: Netlink, w: _Wanted) -> None:
        """The router's ways out: the transit leg for SNATed egress, the external leg for floating IPs."""
        s, network = self.settings, w.network
        transit, external = names.transit_leg(network.id), names.external_leg(network.id)
        links = {name: link for name in (transit, external) if (link := nl.link(name)) is not None}
        router_address = ""
        if network.snat:
            host_address, router_address = self._transit_addresses(nl, transit in links, transit)
            if transit not in links:
                nl.add_veth(transit, names.TRANSIT_LEG, w.namespace, s.underlay_mtu)
                # Forwarding back and forth with the host: its reverse path is the transit leg for
                # egress and the external leg for floating IPs, both right.
                rnl.sysctl("net.ipv4.conf.all.rp_filter", "0")
                log.info("router_transit_created", network=network.id, address=router_address)
            if (host_address, 30) not in nl.addresses(transit):
                nl.address_add(transit, host_address, 30)
            nl.set_up(transit)
            rnl.set_up(names.TRANSIT_LEG)
            if (router_address, 30) not in rnl.addresses(names.TRANSIT_LEG):
                rnl.address_add(names.TRANSIT_LEG, router_address, 30)
            if ("default", host_address, names.TRANSIT_LEG) not in rnl.routes():
                rnl.route_set("default", host_address, names.TRANSIT_LEG)
        elif transit in links:
            nl.delete_link(transit)  # its namespace end, and the default route through it, go too
            log.info("router_transit_removed", network=network.id)

        floating = {f.address: next(p.ip for p in network.ports if p.id == f.port_id) for f in network.floating_ips}
        if floating and network.external is not None and s.external_interface is not None:
            if external not in links:
                nl.add_veth(external, names.EXTERNAL_LEG, w.namespace, s.underlay_mtu)
                log.info("router_external_leg_created", network=network.id)
            leg = nl.link(external)
            if leg is None or leg.master != s.external_interface:
                nl.set_master(external, s.external_interface)
            nl.set_up(external)
            rnl.set_up(names.EXTERNAL_LEG)
            present = rnl.addresses(names.EXTERNAL_LEG)
            for address, prefixlen in present - {(a, 32) for a in floating}:
                rnl.address_del(names.EXTERNAL_LEG, address, prefixlen)
            for address in sorted(floating):
                if (address, 32) not in present:
                    rnl.address_add(names.EXTERNAL_LEG, address, 32)
                    rnl.announce(names.EXTERNAL_LEG, address)  # the outside learns the address is here now
                    log.info("floating_ip_announced", network=network.id, address=address)
                    self._announce_again(network.id, w.namespace, address)
            # Sources with a floating IP leave by the external leg, except to the network itself.
            want_routes = {("default", network.external.gateway, names.EXTERNAL_LEG),
                           (str(network.external.cidr), None, names.EXTERNAL_LEG)}
            want_routes |= {(str(sub.cidr), None, names.router_leg(sub.vni)) for sub in w.subnets}
            have_routes = rnl.routes(FLOATING_TABLE)
            for destination, _gateway, _device in have_routes - want_routes:
                rnl.route_del(destination, FLOATING_TABLE)
            for destination, gateway, device in sorted(want_routes - have_routes, key=lambda r: r[0] == "default"):
                rnl.route_set(destination, gateway, device or "", FLOATING_TABLE)
            want_rules = {(fixed, FLOATING_TABLE) for fixed in floating.values()}
            have_rules = rnl.rules()
            for source, table in have_rules - want_rules:
                rnl.rule_del(source, table)
            for source, table in want_rules - have_rules:
                rnl.rule_add(source, table, FLOATING_RULE_PRIORITY)
        else:
            if external in links:
                nl.delete_link(external)
                log.info("router_external_leg_removed", network=network.id)
            for source, table in rnl.rules():
                rnl.rule_del(source, table)
            for destination, _gateway, _device in rnl.routes(FLOATING_TABLE):
                rnl.route_del(destination, FLOATING_TABLE)
            floating = {}
        apply_router_nat(w.namespace, RouterNat(
            floating=tuple(sorted(floating.items())), external_leg=names.EXTERNAL_LEG,
            snat_sources=tuple(str(sub.cidr) for sub in w.subnets) if network.snat else (),
            transit_leg=names.TRANSIT_LEG, transit_address=router_address))

    def _announce_again(self, network_id: str, namespace: str, address: str) -> None:
        def again() -> None:
            for pause in ANNOUNCE_AGAIN_S:
                if self._stop.wait(pause):
                    return
                try:
                    # Under the lock, and only into a namespace that is there: opening one that a
                    # sync just removed would make it again (pyroute2 creates a missing netns).
                    with self._lock:
                        if namespace not in namespaces():
                            return  # the network went meanwhile
                        with Netlink(namespace) as rnl:
                            if (address, 32) not in rnl.addresses(names.EXTERNAL_LEG):
                                return  # moved on meanwhile
                            rnl.announce(names.EXTERNAL_LEG, address)
                except NetworkError as exc:
                    log.info("floating_ip_announce_dropped", network=network_id, address=address, error=str(exc))
                    return

        threading.Thread(target=again, name=f"announce-{address}", daemon=True).start()

    def _transit_addresses(self, nl: Netlink, made: bool, transit: str) -> tuple[str, str]:
        """The host's and the router's address on a router's transit /30: kept if it has one, else the
        lowest /30 of the transit range that no other router of this host holds."""
        pool = ipaddress.IPv4Network(self.settings.transit_cidr)
        if made:
            for address, _prefixlen in nl.addresses(transit):
                slot = ipaddress.IPv4Network(f"{address}/30", strict=False)
                if slot.subnet_of(pool):
                    return str(slot[1]), str(slot[2])
        taken: set[ipaddress.IPv4Network] = set()
        for name in nl.links():
            if names.OWNED_PER_NETWORK.match(name) and name.startswith("clt") and name != transit:
                for address, _prefixlen in nl.addresses(name):
                    taken.add(ipaddress.IPv4Network(f"{address}/30", strict=False))
        for slot in pool.subnets(new_prefix=30):
            if slot not in taken:
                return str(slot[1]), str(slot[2])
        raise NetworkError(f"no free /30 left in network.transit_cidr {pool} for another router")

    def _prepare_egress(self, nl: Netlink) -> None:
        assert self.settings.external_interface is not None
        nl.sysctl("net.ipv4.ip_forward", "1")
        apply_host_egress(self.settings.netns, HostEgress(self.settings.transit_cidr,
                                                          self.settings.external_interface))
        self._egress_ready = True
        log.info("host_egress_ready", external=self.settings.external_interface)

    def _plug(self, nl: Netlink, link: Link | None, tap: str, bridge: str, port: LocalPort) -> None:
        if link is None and self.settings.tap_netns:
            if nl.take_link(tap, self.settings.tap_netns):
                log.info("tap_moved", tap=tap, source=self.settings.tap_netns)
                link = nl.link(tap)
        if link is None:
            return  # the guest is not running: its tap is plugged when it appears
        if link.master != bridge:
            nl.set_master(tap, bridge)
            log.info("port_plugged", port=port.id, tap=tap, bridge=bridge)
        if not link.up or link.mtu != self.settings.mtu:
            nl.set_up(tap, self.settings.mtu)
        if self._pinned.get(tap) != (link.index, port.mac):
            nl.fdb_pin(tap, port.mac)
            self._pinned[tap] = (link.index, port.mac)

    def _converge_forwarding(self, nl: Netlink, network: DesiredNetwork, subnet: Subnet, thorough: bool) -> None:
        vxlan = names.vxlan(subnet.vni)
        remote = [p for p in network.remote_ports if p.subnet_id == subnet.id]
        want_fdb = {(p.mac, p.vtep) for p in remote}
        want_neigh = {(p.ip, p.mac) for p in remote}
        # Dumping a bridge's FDB reads every local port's entries too: the written ones stand in
        # unless the sync is thorough (or a change of them failed half-way).
        written = self._forwarding.pop(vxlan, None)
        have_fdb, have_neigh = written if written is not None and not thorough else \
            (nl.fdb(vxlan), nl.neighbours(vxlan))
        for mac, vtep in have_fdb - want_fdb:
            nl.fdb_del(vxlan, mac, vtep)
        for mac, vtep in want_fdb - have_fdb:
            nl.fdb_add(vxlan, mac, vtep)
        for ip, _mac in have_neigh - want_neigh:
            nl.neighbour_del(vxlan, ip)
        for ip, mac in want_neigh - have_neigh:
            nl.neighbour_set(vxlan, ip, mac)
        self._forwarding[vxlan] = (frozenset(want_fdb), frozenset(want_neigh))

    def _converge_dhcp(self, w: _Wanted, subnet: Subnet) -> None:
        if not subnet.dhcp:
            if subnet.vni in self._dhcp.servers():
                self._dhcp.remove(subnet.vni)
            return
        hosts = tuple((p.mac, p.ip) for p in w.network.ports if p.subnet_id == subnet.id)
        self._dhcp.ensure(DhcpServer(
            vni=subnet.vni, namespace=w.namespace, interface=names.router_leg(subnet.vni),
            network=str(subnet.cidr.network_address), netmask=str(subnet.cidr.netmask), mtu=self.settings.mtu,
            router=subnet.gateway if w.network.router else None, dns_servers=subnet.dns_servers, hosts=hosts))

    # --- removal -------------------------------------------------------------------------------

    def _remove_subnet(self, nl: Netlink, vni: int) -> None:
        if vni in self._dhcp.servers():
            self._dhcp.remove(vni)
        self._forwarding.pop(names.vxlan(vni), None)
        # The veth's namespace end goes with its host end; taps in the bridge are let go.
        for name in (names.gateway_leg(vni), names.vxlan(vni), names.bridge(vni)):
            nl.delete_link(name)
        log.info("segment_removed", vni=vni)

    def _remove_network(self, nl: Netlink, network_id: str) -> None:
        namespace = names.router_namespace(self.settings.namespace_prefix, network_id)
        try:
            with Netlink(namespace) as rnl:
                vnis = [v for v in (_leg_vni(name) for name in rnl.links()) if v is not None]
        except LinkNotFound:
            vnis = []
        for vni in vnis:
            self._remove_subnet(nl, vni)
        remove_namespace(namespace)
        nl.forget_links()  # its veths' ends here went with it
        log.info("router_namespace_removed", network=network_id, namespace=namespace)

    def _remove_strays(self, nl: Netlink, wanted_vnis: set[int], wanted_networks: set[str]) -> None:
        """What a full sync finds of ours that no network wants (a backend killed mid-change)."""
        links = nl.links()
        stray = {vni for name in links if (vni := names.vni_of(name)) is not None} - wanted_vnis
        for vni in sorted(stray | (self._dhcp.servers() - wanted_vnis)):
            self._remove_subnet(nl, vni)
        keep = {network_id.replace("-", "")[:11] for network_id in wanted_networks}
        for name in links:
            match = names.OWNED_PER_NETWORK.match(name)
            if match and match.group(1) not in keep:
                nl.delete_link(name)

    # --- reads ---------------------------------------------------------------------------------

    def inventory(self) -> dict[str, Any]:
        """What the host has: per network, its segments and the taps plugged into them."""
        with self._lock, Netlink(self.settings.netns) as nl:
            links = nl.links()
            prefix = names.router_namespace(self.settings.namespace_prefix, "")
            networks = []
            for ns in sorted(n for n in namespaces() if n.startswith(prefix)):
                with Netlink(ns) as rnl:
                    vnis = sorted(v for v in (_leg_vni(name) for name in rnl.links()) if v is not None)
                bridges = {names.bridge(v) for v in vnis}
                taps = sorted(link.name for link in links.values() if link.master in bridges
                              and link.name.startswith("tap"))
                networks.append({"id": ns[len(prefix):], "vnis": vnis, "taps": taps,
                                 "fdb": sum(len(nl.fdb(names.vxlan(v))) for v in vnis if names.vxlan(v) in links)})
            return {"networks": networks, "dhcp": sorted(self._dhcp.servers())}


def _leg_vni(name: str) -> int | None:
    if name.startswith("sn") and name[2:].isdigit():
        return int(name[2:])
    return None

