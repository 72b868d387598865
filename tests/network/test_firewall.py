"""The port firewall on real kernels: namespace hypervisors, instances on real bridges, real packets.

One lab serves the whole module (building it is most of the time): two hypervisors of an
underlay (``tests/support/netns.py``) whose network drivers plug the instances into their
bridges, as ``test_driver.py`` does, and a ``Firewall`` on the first.  Two tenants, red and blue,
have the same subnet, 10.0.0.0/24, on it:

- red: a server ``s`` (10.0.0.10) and clients ``c1`` (10.0.0.21) and ``c3`` (10.0.0.33) on hv1,
  and ``c2`` (10.0.0.22) on hv2, where no port is firewalled;
- blue: a server ``bs`` (10.0.0.10) and a client ``bc1`` (10.0.0.21) on hv1.

Each test applies the whole state it needs, so the tests share the lab safely; the clients'
rules let everything out, and only replies (established flows) in.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from pyroute2 import netns as pynetns
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

from backend.network import names
from backend.network.driver import NetworkDriver, NetworkSettings
from backend.network import netfilter
from backend.network.exceptions import BadRequest, NetworkError
from backend.network.firewall import Firewall
from backend.network.firewall_state import ICMP, TCP, UDP, FirewallState, PortFirewall, Rule
from backend.network.namespaces import run_in as in_namespace
from backend.network.spec import desired_state
from tests.support.netns import Hypervisor, Instance, Underlay, run_in
from tests.support.waiting import until

pytestmark = [pytest.mark.root]

RED_VNI, BLUE_VNI = 7001, 7002
ZONES = {names.bridge(RED_VNI): 1, names.bridge(BLUE_VNI): 2}
EVERYTHING_OUT = Rule("egress")
ECHO_PORT, UDP_PORT = 22, 5000
#: how long a packet that would pass takes at most to arrive (a dropped one never does)
PATIENCE = 1.0
#: linux/socket.h: a receive buffer beyond net.core.rmem_max (root only), for a stream of datagrams
SO_RCVBUFFORCE = 33


@dataclass(frozen=True)
class Vm:
    instance: Instance
    port_id: str
    ip: str
    bridge: str

    @property
    def netns(self) -> str:
        return self.instance.netns

    def port(self, *rules: Rule) -> PortFirewall:
        return PortFirewall(self.port_id, self.instance.tap, self.bridge, self.instance.mac, self.ip, rules)


class _Serving:
    """Threads serving sockets until ``close()``, which waits for them: a socket closed under a
    thread blocked on it would stay open (and its port taken) until that thread let go."""

    #: how often the threads look whether they are to stop
    TICK = 0.05

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)


class Echo(_Serving):
    """A TCP server in a namespace answering each message with ``tag`` + the message."""

    def __init__(self, netns: str, tag: bytes) -> None:
        super().__init__()
        self.tag = tag
        self.server = in_namespace(netns, lambda: socket.create_server(("0.0.0.0", ECHO_PORT)))
        self.server.settimeout(self.TICK)
        self._start(self._accept)

    def _accept(self) -> None:
        with self.server:
            while not self._stop.is_set():
                try:
                    conn, _ = self.server.accept()
                except TimeoutError:
                    continue
                conn.settimeout(self.TICK)
                self._start(self._echo, conn)

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(64)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(self.tag + data)


class Sink(_Serving):
    """The payloads that arrive in a namespace: of UDP datagrams to a port, or (``port`` None) of
    every ICMP message."""

    def __init__(self, netns: str, port: int | None) -> None:
        super().__init__()

        def open_socket() -> socket.socket:
            if port is None:
                return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            sock.bind(("0.0.0.0", port))
            return sock

        self.raw = port is None
        self.sock = in_namespace(netns, open_socket)
        self.sock.settimeout(self.TICK)
        self.got: list[bytes] = []
        self._start(self._receive)

    def _receive(self) -> None:
        with self.sock:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(2048)
                except TimeoutError:
                    continue
                # A raw socket reads the IP header and the ICMP header first.
                self.got.append(data[(data[0] & 0x0F) * 4 + 8:] if self.raw else data)

    def payloads(self) -> set[bytes]:
        return set(self.got)


class Lab:
    def __init__(self, underlay: Underlay, tmp: Path) -> None:
        self.underlay = underlay
        self.drivers: list[NetworkDriver] = []
        self.servers: list[Echo] = []
        self._ports: list[dict[str, str]] = []
        try:
            self._build(tmp)
        except BaseException:
            self.close()
            raise

    def _build(self, tmp: Path) -> None:
        self.hv1, self.hv2 = self.underlay.hypervisor(), self.underlay.hypervisor()
        self.s = self._vm(RED_VNI, "10.0.0.10", self.hv1)
        self.c1 = self._vm(RED_VNI, "10.0.0.21", self.hv1)
        self.c2 = self._vm(RED_VNI, "10.0.0.22", self.hv2)
        self.c3 = self._vm(RED_VNI, "10.0.0.33", self.hv1)
        self.bs = self._vm(BLUE_VNI, "10.0.0.10", self.hv1)
        self.bc1 = self._vm(BLUE_VNI, "10.0.0.21", self.hv1)
        # The network drivers, as test_driver.py drives them, plug the taps and serve DHCP: synced
        # once, before any firewall.
        for hv in (self.hv1, self.hv2):
            driver = NetworkDriver(NetworkSettings(host=hv.name, vtep=hv.vtep, state_dir=tmp / hv.name,
                                                   namespace_prefix=f"{hv.name}-", netns=hv.netns))
            self.drivers.append(driver)
            driver.sync(desired_state(self._body(), hv.vtep))
        for vm in (self.s, self.c1, self.c2, self.c3, self.bs, self.bc1):
            run_in(vm.netns, "ip", "addr", "add", f"{vm.ip}/24", "dev", "eth0")
        self.firewall = Firewall(self.hv1.netns)
        self.servers += [Echo(self.s.netns, b"red:"), Echo(self.bs.netns, b"blue:")]

    def _vm(self, vni: int, ip: str, host: Hypervisor) -> Vm:
        port_id = str(uuid.uuid4())
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))
        self._ports.append({"vni": str(vni), "id": port_id, "mac": mac, "ip": ip, "vtep": host.vtep})
        return Vm(self.underlay.instance(host, port_id, mac), port_id, ip, names.bridge(vni))

    def _body(self) -> dict[str, Any]:
        """``net.sync``: red and blue, one subnet each, with the same CIDR; no router."""
        networks = []
        for vni in (RED_VNI, BLUE_VNI):
            subnet = str(uuid.UUID(int=vni))
            networks.append({
                "id": str(uuid.UUID(int=vni + 1)), "router": False, "snat": False, "external": None,
                "subnets": [{"id": subnet, "vni": vni, "cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "dhcp": True,
                             "dns_servers": []}],
                "floating_ips": [],
                "ports": [{"id": p["id"], "subnet_id": subnet, "mac": p["mac"], "ip": p["ip"], "vtep": p["vtep"]}
                          for p in self._ports if p["vni"] == str(vni)]})
        return {"revision": time.time_ns(), "scope": None, "networks": networks}

    def state(self, server: tuple[Rule, ...] = (), blue_server: tuple[Rule, ...] = (),
              members: dict[str, frozenset[str]] | None = None, c3: bool = True) -> FirewallState:
        """hv1's firewall: the two servers with the rules given, the clients free to go out."""
        ports = [self.s.port(*server), self.c1.port(EVERYTHING_OUT), self.bs.port(*blue_server),
                 self.bc1.port(EVERYTHING_OUT)]
        if c3:
            ports.append(self.c3.port(EVERYTHING_OUT))
        return FirewallState(tuple(ports), members or {}, dict(ZONES))

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for driver in self.drivers:
            driver.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, iptables")
    underlay = Underlay(tmp_path_factory.mktemp("firewall"))
    with underlay:
        lab = Lab(underlay, tmp_path_factory.mktemp("drivers"))
        try:
            yield lab
        finally:
            lab.close()
    # The lab's namespaces took every chain, set and conntrack entry with them.
    assert not [n for n in pynetns.listnetns() if n.startswith(underlay.prefix)]


@pytest.fixture
def conns() -> Iterator[list[socket.socket]]:
    """The test's client connections, closed after it whatever happens."""
    opened: list[socket.socket] = []
    yield opened
    for conn in opened:
        conn.close()


Sinks = Callable[[Vm, int | None], Sink]


@pytest.fixture
def sinks() -> Iterator[Sinks]:
    """Makes the test's sinks (``Sink(vm.netns, port)``), closed after it whatever happens."""
    opened: list[Sink] = []

    def sink(vm: Vm, port: int | None) -> Sink:
        opened.append(Sink(vm.netns, port))
        return opened[-1]

    yield sink
    for each in opened:
        each.close()


def _connect(conns: list[socket.socket], vm: Vm, address: str, sport: int = 0) -> socket.socket | None:
    """A connection from ``vm`` to its tenant's server at ``address``; None if it cannot be made."""
    def attempt() -> socket.socket | None:
        sock = socket.socket()
        sock.settimeout(PATIENCE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            if sport:
                sock.bind((vm.ip, sport))
            sock.connect((address, ECHO_PORT))
        except OSError:
            sock.close()
            return None
        return sock

    conn = in_namespace(vm.netns, attempt)
    if conn is not None:
        conns.append(conn)
    return conn


def _talk(conn: socket.socket, message: bytes = b"x") -> bytes | None:
    """The server's answer to ``message`` on an open connection; None if none comes."""
    try:
        conn.sendall(message)
        return conn.recv(64)
    except OSError:
        return None


def _reply(conns: list[socket.socket], vm: Vm, address: str, sport: int = 0) -> bytes | None:
    conn = _connect(conns, vm, address, sport)
    return _talk(conn) if conn is not None else None


def _send_udp(vm: Vm, address: str, port: int, payload: bytes, source: str = "0.0.0.0", sport: int = 0) -> None:
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((source, sport))
            sock.sendto(payload, (address, port))
    in_namespace(vm.netns, send)


def _send_icmp(vm: Vm, address: str, icmp_type: int, payload: bytes) -> None:
    header = struct.pack("!BBHHH", icmp_type, 0, 0, os.getpid() & 0xFFFF, 1)
    checksum = _checksum(header + payload)
    packet = header[:2] + struct.pack("!H", checksum) + header[4:] + payload

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            sock.sendto(packet, (address, 0))
    in_namespace(vm.netns, send)


def _send_arp_request(vm: Vm, claimed_ip: str, target_ip: str) -> None:
    """An ARP request from ``vm``'s MAC whose sender IP is ``claimed_ip``, broadcast."""
    mac = bytes.fromhex(vm.instance.mac.replace(":", ""))
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton(claimed_ip), b"\0" * 6,
                      socket.inet_aton(target_ip))
    frame = b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind(("eth0", 0))
            sock.send(frame)
    in_namespace(vm.netns, send)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ping(vm: Vm, address: str, ipv6: bool = False) -> bool:
    family = "-6" if ipv6 else "-4"
    return run_in(vm.netns, "ping", family, "-c", "1", "-W", "1", address, check=False).returncode == 0


def _kernel(hv: Hypervisor) -> str:
    """The filter and raw tables, ip6tables' filter table and the ipsets of ``hv``, as their save
    commands print them (less the counters and the dates); python-iptables writes the legacy tables."""
    return _saved(hv, ("iptables-legacy-save", "-t", "filter"), ("iptables-legacy-save", "-t", "raw"),
                  ("ip6tables-legacy-save", "-t", "filter"), ("ipset", "save"), ("nft", "list", "ruleset"))


def _filter_table(hv: Hypervisor) -> str:
    return _saved(hv, ("iptables-legacy-save", "-t", "filter"))


def _saved(hv: Hypervisor, *commands: tuple[str, ...]) -> str:
    text = "".join(run_in(hv.netns, *argv).stdout for argv in commands)
    return "\n".join(re.sub(r" \[\d+:\d+\]", "", line) for line in text.splitlines() if not line.startswith("#"))


def _chains_of(vm: Vm, kernel: str) -> list[str]:
    chain_id = vm.port_id.replace("-", "")[:11]
    return sorted(set(re.findall(rf"\bcl[io][ab]{chain_id}\b", kernel)))


def _set_name(group: str) -> str:
    return "clg" + group.replace("-", "")[:20]


def _flows(hv: Hypervisor, source: str, sport: int) -> list[tuple[int, str, int]]:
    """The zones of the conntrack entries of flows from ``source``:``sport`` in ``hv``, with their destination."""
    def dump() -> list[tuple[int, str, int]]:
        out = []
        with NFCTSocket() as ct:
            for msg in ct.dump():
                ip = msg.get_attr("CTA_TUPLE_ORIG").get_attr("CTA_TUPLE_IP")
                proto = msg.get_attr("CTA_TUPLE_ORIG").get_attr("CTA_TUPLE_PROTO")
                if ip.get_attr("CTA_IP_V4_SRC") == source and proto.get_attr("CTA_PROTO_SRC_PORT") == sport:
                    out.append((msg.get_attr("CTA_ZONE") or 0, ip.get_attr("CTA_IP_V4_DST"),
                                proto.get_attr("CTA_PROTO_DST_PORT")))
        return sorted(out)
    return in_namespace(hv.netns, dump)


def test_tcp_from_one_cidr_only(lab: Lab, conns: list[socket.socket]) -> None:
    lab.firewall.apply(lab.state(server=(Rule("ingress", TCP, 22, 22, remote_cidr="10.0.0.16/28"),)))
    assert _reply(conns, lab.c1, lab.s.ip) == b"red:x"
    assert _reply(conns, lab.c2, lab.s.ip) == b"red:x"  # from hv2, through VXLAN
    assert _reply(conns, lab.c3, lab.s.ip) is None  # 10.0.0.33 is outside 10.0.0.16/28
    assert not _ping(lab.c1, lab.s.ip)


def test_icmp_types(lab: Lab, sinks: Sinks) -> None:
    lab.firewall.apply(lab.state(server=(Rule("ingress", ICMP, icmp_type=8),)))
    assert _ping(lab.c1, lab.s.ip)
    seen = sinks(lab.s, None)
    _send_icmp(lab.c1, lab.s.ip, 13, b"timestamp-request")
    _send_icmp(lab.c1, lab.s.ip, 8, b"echo-request")
    until(lambda: b"echo-request" in seen.payloads(), PATIENCE, "the echo request")
    assert b"timestamp-request" not in seen.payloads()


def test_a_port_without_rules_gets_its_dhcp_and_nothing_else(lab: Lab, conns: list[socket.socket]) -> None:
    lab.firewall.apply(lab.state())
    assert lab.underlay.dhcp(lab.s.instance)["ip"] == lab.s.ip
    assert not _ping(lab.c1, lab.s.ip)
    assert _reply(conns, lab.c1, lab.s.ip) is None


def test_a_remote_group_lets_its_members_in_and_removed_ones_out(lab: Lab, conns: list[socket.socket]) -> None:
    group = str(uuid.uuid4())
    server = (Rule("ingress", TCP, 22, 22, remote_group=group),)
    lab.firewall.apply(lab.state(server=server, members={group: frozenset({lab.c1.ip})}))
    held = _connect(conns, lab.c1, lab.s.ip)
    assert held is not None and _talk(held) == b"red:x"
    assert _reply(conns, lab.c3, lab.s.ip) is None
    filter_table = _filter_table(lab.hv1)

    lab.firewall.apply(lab.state(server=server, members={group: frozenset({lab.c3.ip})}))
    assert _talk(held, b"y") is None  # its flow ended: the established connection passes nothing more
    assert _reply(conns, lab.c1, lab.s.ip) is None
    assert _reply(conns, lab.c3, lab.s.ip) == b"red:x"
    # The set changed, not a chain.
    assert _filter_table(lab.hv1) == filter_table
    assert f"add {_set_name(group)} {lab.c3.ip}" in _kernel(lab.hv1)


def test_an_established_connection_survives_a_change_of_other_rules(lab: Lab, sinks: Sinks,
                                                                     conns: list[socket.socket]) -> None:
    base = (Rule("ingress", TCP, 22, 22, remote_cidr="10.0.0.16/28"),
            Rule("ingress", UDP, UDP_PORT, UDP_PORT, remote_cidr="10.0.0.16/28"))
    other = base + (Rule("ingress", UDP, 53, 53),)
    lab.firewall.apply(lab.state(server=base))
    held = _connect(conns, lab.c1, lab.s.ip)
    assert held is not None and _talk(held) == b"red:x"
    chains = _chains_of(lab.s, _kernel(lab.hv1))

    # A datagram a millisecond from c1 while the server's chains are swapped, again and again: each
    # is a new packet of an unanswered flow, judged by the chains it meets, and none is lost.
    received = sinks(lab.s, UDP_PORT)
    stop = threading.Event()
    sent: list[int] = []

    def stream() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not stop.is_set():
                sock.sendto(struct.pack("!I", len(sent)), (lab.s.ip, UDP_PORT))
                sent.append(len(sent))
                time.sleep(0.001)

    thread = threading.Thread(target=lambda: in_namespace(lab.c1.netns, stream), daemon=True)
    thread.start()
    try:
        until(lambda: received.got, 2.0, "the stream to arrive")
        for rules in (other, base) * 3:
            lab.firewall.apply(lab.state(server=rules))
            assert _chains_of(lab.s, _kernel(lab.hv1)) != chains  # rebuilt under the other generation
            chains = _chains_of(lab.s, _kernel(lab.hv1))
    finally:
        stop.set()
        thread.join(5)
    until(lambda: len(received.got) >= len(sent), PATIENCE, "the last datagrams")
    assert sorted(struct.unpack("!I", p)[0] for p in received.payloads()) == sent
    assert _talk(held, b"y") == b"red:y"


def test_spoofed_sources_and_rogue_dhcp_servers_are_dropped(lab: Lab, sinks: Sinks) -> None:
    lab.firewall.apply(lab.state(server=(Rule("ingress", UDP, UDP_PORT, UDP_PORT),)))
    received = sinks(lab.s, UDP_PORT)
    run_in(lab.c1.netns, "ip", "addr", "add", "10.0.0.99/32", "dev", "eth0")
    try:
        _send_udp(lab.c1, lab.s.ip, UDP_PORT, b"spoofed-ip", source="10.0.0.99")
    finally:
        run_in(lab.c1.netns, "ip", "addr", "del", "10.0.0.99/32", "dev", "eth0")
    run_in(lab.c1.netns, "ip", "link", "set", "eth0", "address", "52:54:00:de:ad:01")
    try:
        _send_udp(lab.c1, lab.s.ip, UDP_PORT, b"spoofed-mac")
    finally:
        run_in(lab.c1.netns, "ip", "link", "set", "eth0", "address", lab.c1.instance.mac)
    _send_udp(lab.c1, lab.s.ip, UDP_PORT, b"genuine")
    until(lambda: b"genuine" in received.payloads(), PATIENCE, "the genuine datagram")
    assert received.payloads() == {b"genuine"}

    # A DHCP reply to c1 from c3 (firewalled) is dropped; the same from c2 (not firewalled) arrives.
    dhcp_client = sinks(lab.c1, 68)
    _send_udp(lab.c3, lab.c1.ip, 68, b"rogue", sport=67)
    _send_udp(lab.c2, lab.c1.ip, 68, b"unfirewalled", sport=67)
    until(lambda: b"unfirewalled" in dhcp_client.payloads(), PATIENCE, "the unfirewalled port's datagram")
    assert dhcp_client.payloads() == {b"unfirewalled"}


def test_ipv6_to_and_from_firewalled_ports_is_dropped(lab: Lab) -> None:
    # Unique local addresses without duplicate detection: reachable at once, on one bridge of hv1.
    addresses = {lab.s: "fd00::10", lab.c1: "fd00::21"}
    for vm, address in addresses.items():
        run_in(vm.netns, "ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
    try:
        lab.firewall.apply(FirewallState())
        assert _ping(lab.c1, addresses[lab.s], ipv6=True)  # no port firewalled: IPv6 passes

        # The server lets every IPv4 packet in: IPv6, which no rule can allow, still does not pass.
        lab.firewall.apply(lab.state(server=(Rule("ingress"),)))
        assert _ping(lab.c1, lab.s.ip)
        assert not _ping(lab.c1, addresses[lab.s], ipv6=True)
        assert not _ping(lab.s, addresses[lab.c1], ipv6=True)
        assert lab.s.instance.tap in _saved(lab.hv1, ("ip6tables-legacy-save", "-t", "filter"))
    finally:
        for vm, address in addresses.items():
            run_in(vm.netns, "ip", "-6", "addr", "del", f"{address}/64", "dev", "eth0", check=False)


def test_arp_claiming_another_ports_address_is_dropped(lab: Lab) -> None:
    # c1 asks c3 who has c3's address, in the name of the server's: c3 then believes the server
    # is at c1's MAC (the kernel takes the sender of a request for its own address as a neighbour).
    def poisoned() -> bool:
        run_in(lab.c3.netns, "ip", "neigh", "flush", "dev", "eth0")
        _send_arp_request(lab.c1, claimed_ip=lab.s.ip, target_ip=lab.c3.ip)
        time.sleep(0.2)
        return lab.c1.instance.mac in run_in(lab.c3.netns, "ip", "neigh", "show", lab.s.ip).stdout

    try:
        lab.firewall.apply(FirewallState())
        assert poisoned()  # nothing firewalled: the claim is believed

        lab.firewall.apply(lab.state(server=(Rule("ingress"),)))
        assert not poisoned()
        assert _ping(lab.c3, lab.s.ip)  # genuine ARP still passes
    finally:
        run_in(lab.c3.netns, "ip", "neigh", "flush", "dev", "eth0")


def test_tenants_with_the_same_addresses_have_their_own_rules_and_flows(lab: Lab, conns: list[socket.socket]) -> None:
    open_server = (Rule("ingress", TCP, 22, 22),)
    lab.firewall.apply(lab.state(server=open_server))
    red = _connect(conns, lab.c1, lab.s.ip, sport=40001)
    assert red is not None and _talk(red) == b"red:x"
    assert _reply(conns, lab.bc1, lab.bs.ip, sport=40001) is None  # blue's server lets nothing in

    # The same flow in both tenants at once: two conntrack entries, one per zone.
    lab.firewall.apply(lab.state(server=open_server, blue_server=open_server))
    blue = _connect(conns, lab.bc1, lab.bs.ip, sport=40001)
    assert blue is not None and _talk(blue) == b"blue:x"
    assert _flows(lab.hv1, "10.0.0.21", 40001) == [(1, "10.0.0.10", 22), (2, "10.0.0.10", 22)]

    # Blue's server closes: blue's flow ends, red's identical one goes on.
    lab.firewall.apply(lab.state(server=open_server))
    assert _talk(blue, b"y") is None
    assert _talk(red, b"y") == b"red:y"
    assert _flows(lab.hv1, "10.0.0.21", 40001) == [(1, "10.0.0.10", 22)]


def test_the_same_state_again_or_from_a_restarted_backend_changes_nothing(lab: Lab, conns: list[socket.socket]) -> None:
    group = str(uuid.uuid4())
    state = lab.state(server=(Rule("ingress", TCP, 22, 22, remote_group=group), Rule("ingress", ICMP, icmp_type=8)),
                      blue_server=(Rule("ingress", TCP, 22, 22, remote_cidr="10.0.0.21/32"),),
                      members={group: frozenset({lab.c1.ip, lab.c3.ip})})
    lab.firewall.apply(state)
    held = _connect(conns, lab.c1, lab.s.ip)
    assert held is not None and _talk(held) == b"red:x"
    before = _kernel(lab.hv1)
    lab.firewall.apply(state)
    assert _kernel(lab.hv1) == before

    lab.firewall = Firewall(lab.hv1.netns)  # what a restarted backend makes
    lab.firewall.apply(state)
    assert _kernel(lab.hv1) == before
    assert _talk(held, b"y") == b"red:y"


def test_ports_and_groups_gone_from_the_state_leave_nothing(lab: Lab, conns: list[socket.socket]) -> None:
    group = str(uuid.uuid4())
    server = (Rule("ingress", TCP, 22, 22, remote_group=group),)
    lab.firewall.apply(lab.state(server=server, members={group: frozenset({lab.c1.ip, lab.c3.ip})}))
    kernel = _kernel(lab.hv1)
    assert _chains_of(lab.c3, kernel) and f"add {_set_name(group)} {lab.c3.ip}" in kernel

    # c3 leaves the state and the group, seen by a restarted backend: it finds the chains stale.
    lab.firewall = Firewall(lab.hv1.netns)
    lab.firewall.apply(lab.state(server=server, members={group: frozenset({lab.c1.ip})}, c3=False))
    kernel = _kernel(lab.hv1)
    assert _chains_of(lab.c3, kernel) == [] and lab.c3.instance.tap not in kernel
    assert f"add {_set_name(group)} {lab.c1.ip}" in kernel and lab.c3.ip not in kernel
    assert _reply(conns, lab.c1, lab.s.ip) == b"red:x"
    assert _reply(conns, lab.c3, lab.s.ip) is None  # not in the group (c3 itself may now send anything)

    # No rule names the group any more: its set goes.
    lab.firewall.apply(lab.state(server=(Rule("ingress", TCP, 22, 22),), c3=False))
    assert _set_name(group) not in _kernel(lab.hv1)
    assert _reply(conns, lab.c3, lab.s.ip) == b"red:x"

    # No port firewalled (the host's last one gone): nothing of ours stays, not even empty chains.
    lab.firewall.apply(FirewallState())
    kernel = _kernel(lab.hv1)
    assert not re.search(r"\bcl(-fw6?|-zone|[io][ab][0-9a-f]{11}|g[0-9a-f]{20})\b|cloudland|port-guard", kernel), kernel


def test_a_change_waits_for_the_xtables_lock_and_names_it_when_it_stays_held(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netfilter, "XTABLES_LOCK_WAIT_S", 0.3)
    state = lab.state(server=(Rule("ingress", TCP, 22, 22),))
    with open(netfilter.XTABLES_LOCK, "a") as held:  # another iptables user, mid-change
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(NetworkError, match="xtables.lock held"):
            lab.firewall.apply(state)
    lab.firewall.apply(state)
    assert _chains_of(lab.s, _filter_table(lab.hv1))


def test_ports_whose_ids_name_the_same_chains_are_refused(lab: Lab) -> None:
    twin = replace(lab.c3.port(), port_id=lab.c1.port_id[:12] + "ffff-ffff-ffffffffffff")
    with pytest.raises(BadRequest, match="share their first 11 hex digits"):
        lab.firewall.apply(replace(lab.state(), ports=lab.state().ports + (twin,)))
