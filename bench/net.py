"""Tenant networks on namespace hypervisors, data path and control path: ``python -m bench.net``.

Everything runs on one lab of ``localcluster/netlab.py`` (namespace hypervisors on an underlay
bridge, no management link), each hypervisor driven by the real ``NetworkDriver`` in this
process through its ``net.sync`` op (the body checked against the op's schema, then
``spec.desired_state``, then the driver: what a backend does with a command, without the
tree), with bodies built as the frontend builds them: one network, its subnets, every port
with the VTEP of its host, scoped to the network, every port in its organization's default
security group (all egress, ingress from the group's members), so that the hosts firewall every
port as they do a port the frontend binds.  Four sections, each beside a reference measured in
the same run:

1. ``throughput``: TCP (iperf3, the same duration and streams for every path) from instance A
   on hypervisor 1 to instance B on hypervisor 2 through VXLAN, beside the same two instance
   namespaces joined by a plain veth pair (MTU 1500: what a guest would get without an
   overlay), and beside A to instance C on A's own hypervisor (one bridge, no tunnel).  Paths
   alternate round by round, so that a busy moment of the machine falls on all of them.  Per
   path: median Gbit/s and the CPU seconds per GB of both iperf3 processes (the kernel charges
   most of the path's softirq work to the sender), steadier than throughput here.  Variants:
   ``base`` (underlay MTU 1500, ports firewalled: the product as the frontend drives it),
   ``unfirewalled`` (the ports name no security group: the hosts keep no chain),
   ``no-br-netfilter`` (unfirewalled, and ``net.bridge.bridge-nf-call-{iptables,ip6tables,
   arptables}`` = 0 in the hypervisors' namespaces: bridged packets skip netfilter, which the
   firewall needs) and ``jumbo`` (firewalled, the lab's underlay links at MTU 9000 and the
   drivers' ``underlay_mtu`` 9000, so guests get 8950), each with this machine's default TCP
   congestion control and with cubic.
2. ``ports``: 1,000 ports wired on one hypervisor, one ``net.sync`` per port added to one
   network (router, DHCP), then unwired one by one (the tap deleted, then a sync without its
   port: the last removes the network).  A port's tap is a veth whose peer is in one shared
   "guests" namespace: a real host has the tap only, and the driver's work grows with the
   links in its namespace.  Reference: the veth creations and deletions themselves, bare
   pyroute2 calls, timed in the same loop.
3. ``ping``: a new port's instance on hypervisor B, synced to both hosts at once (two threads:
   the frontend multicasts), and the time from the sync's start until an instance on
   hypervisor A has its first ICMP echo reply (echo requests every 5 ms from the start;
   the pinging instance's ARP retransmit time is 10 ms, not 1 s, so that the hosts' work is
   timed, not the guest's ARP timer).  Reference: a plain veth made between the same instance
   and a fresh namespace, addressed and up, until its first reply.
4. ``fanout``: one network over N simulated hypervisors (N remote VTEPs that need not exist;
   the host under test has one port): the sync of the whole body onto a host that has nothing
   of the network (from scratch), and a sync that adds one remote port (its FDB and neighbour
   entries).  Reference: the same FDB (device and bridge) and neighbour entries written by bare
   pyroute2 calls on a scratch VXLAN device.

CPU seconds are this process's (``time.process_time()``) plus its reaped children's
(``getrusage(RUSAGE_CHILDREN)``); the DHCP servers the driver starts are counted from /proc while
they run (and taken out of the children's figure when the last port's removal reaps them).

Everything the run makes is in the lab's namespaces and a temporary directory: both are
removed at the end, after a failure, Ctrl-C or SIGTERM too (every process in the lab's
namespaces is killed first); what a SIGKILLed run left is removed by the next lab to open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import platform
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click
from pyroute2 import NetNS, netns

from backend.network.driver import NetworkDriver, NetworkSettings
from backend.network.namespaces import run_in
from backend.network.ops import ops
from backend.ports import tap_name
from backend.registry import Op
from localcluster.netlab import Hypervisor, NetLab, netns_argv
from service.logs import setup_logging

RESULTS_DIR = Path(__file__).parent / "results"
SECTIONS = ("throughput", "ports", "ping", "fanout")
VARIANTS = ("base", "unfirewalled", "no-br-netfilter", "jumbo")
PATHS = ("veth", "vxlan", "bridge")
#: the reference link's MTU: a plain Ethernet link, what a guest would have without the overlay
REFERENCE_MTU = 1500
JUMBO_MTU = 9000
IPERF_PORT = 5201
PING_INTERVAL_S = 0.005
PING_TIMEOUT_S = 10.0
#: the pinging instance's ARP retransmit time (the kernel's default is 1 s)
ARP_RETRANS_MS = 10
BRIDGE_NF = ("iptables", "ip6tables", "arptables")
#: remote VTEPs of the fan-out: addresses that need not exist (nothing is sent to them)
FANOUT_VTEPS = ipaddress.IPv4Address("100.64.0.1")
#: port counts at which the wiring's per-sync time is reported
MILESTONES = (1, 10, 100, 500, 1000)


@dataclass(frozen=True)
class Config:
    sections: tuple[str, ...] = SECTIONS
    seconds: int = 3
    rounds: int = 5
    parallel: int = 1
    variants: tuple[str, ...] = VARIANTS
    #: extra congestion controls beside the machine's default
    congestion: tuple[str, ...] = ("cubic",)
    ports: int = 1000
    ping_trials: int = 10
    fanout_hosts: int = 100
    fanout_ports_per_host: int = 1
    fanout_trials: int = 10
    fanout_full_trials: int = 5


QUICK = Config(seconds=1, rounds=1, variants=("base",), congestion=(), ports=20, ping_trials=3, fanout_hosts=10,
               fanout_trials=3, fanout_full_trials=2)


# Measuring ------------------------------------------------------------------------------------


def _cpu() -> float:
    """CPU seconds of this process and its reaped children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _proc_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Span:
    """Wall and CPU seconds of one measured step."""

    wall_s: float = 0.0
    cpu_s: float = 0.0


@contextlib.contextmanager
def measured(into: list[Span]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), _cpu()
    yield
    into.append(Span(time.perf_counter() - wall, _cpu() - cpu))


def _r(value: float | None, digits: int = 4) -> float | None:
    """Rounded to ``digits`` significant digits (times here range from microseconds to minutes)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, max(0, digits - 1 - int(math.floor(math.log10(abs(value))))))


def _pct(values: list[float], pct: int) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return _r(ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1])


def _median(values: list[float]) -> float | None:
    return _r(statistics.median(values)) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return _r(a / b, 3) if a is not None and b else None


def _spans(spans: list[Span]) -> dict[str, Any]:
    walls = [s.wall_s for s in spans]
    return {"n": len(spans), "p50_s": _pct(walls, 50), "p90_s": _pct(walls, 90),
            "max_s": _r(max(walls)) if walls else None, "wall_s": _r(sum(walls)),
            "cpu_s": _r(sum(s.cpu_s for s in spans))}


# The frontend's view ----------------------------------------------------------------------------


class Revisions:
    """A body's revision is when it was built (ns), and always newer than the last."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns(), self._last + 1)
        return self._last


@dataclass
class Port:
    id: str
    mac: str
    ip: str
    vtep: str


@dataclass
class Network:
    """One network of one subnet, and its bound ports, as the frontend keeps them."""

    revisions: Revisions
    vni: int
    cidr: str
    router: bool
    dhcp: bool
    #: every port in its organization's default group, as the frontend binds a port made without
    #: groups (all egress, ingress from the group's members); False: the ports name no group, and
    #: the hosts firewall nothing
    firewall: bool = True
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    subnet_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    group_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ports: list[Port] = field(default_factory=list)
    _macs: int = 0

    def port(self, host: Hypervisor | str, offset: int | None = None) -> Port:
        """A new port on ``host`` (a hypervisor, or a VTEP), with the next MAC and an address of the subnet."""
        self._macs += 1
        net = ipaddress.IPv4Network(self.cidr)
        number = 10 + (offset if offset is not None else len(self.ports))
        mac = "52:54:%02x:%02x:%02x:%02x" % (self.vni & 0xff, self._macs >> 16 & 0xff, self._macs >> 8 & 0xff,
                                             self._macs & 0xff)
        vtep = host if isinstance(host, str) else host.vtep
        port = Port(str(uuid.uuid4()), mac, str(net.network_address + number), vtep)
        self.ports.append(port)
        return port

    def body(self) -> dict[str, Any]:
        """``net.sync`` for every host of the network: scoped to it, each host takes its own ports."""
        net = ipaddress.IPv4Network(self.cidr)
        groups = {"security_groups": [self.group_id]} if self.firewall else {}
        body: dict[str, Any] = {"revision": self.revisions.next(), "scope": [self.id], "networks": [{
            "id": self.id, "router": self.router, "snat": False, "external": None, "floating_ips": [],
            "subnets": [{"id": self.subnet_id, "vni": self.vni, "cidr": self.cidr,
                         "gateway": str(net.network_address + 1), "dhcp": self.dhcp, "dns_servers": []}],
            "ports": [{"id": p.id, "subnet_id": self.subnet_id, "mac": p.mac, "ip": p.ip, "vtep": p.vtep, **groups}
                      for p in self.ports]}]}
        if self.firewall and self.ports:
            anything = {"protocol": None, "port_min": None, "port_max": None, "icmp_type": None, "icmp_code": None,
                        "remote_cidr": None}
            body["security_groups"] = [{
                "id": self.group_id, "members": sorted({p.ip for p in self.ports}),
                "rules": [{"direction": "egress", **anything, "remote_group": None},
                          {"direction": "ingress", **anything, "remote_group": self.group_id}]}]
        return body


class Host:
    """A namespace hypervisor and its network driver, answering ``net.sync`` as its backend would."""

    def __init__(self, hypervisor: Hypervisor, state_dir: Path, underlay_mtu: int = 1500) -> None:
        self.hv = hypervisor
        self.settings = NetworkSettings(host=hypervisor.name, vtep=hypervisor.vtep, state_dir=state_dir,
                                        namespace_prefix=hypervisor.namespace_prefix, netns=hypervisor.netns,
                                        underlay_mtu=underlay_mtu)
        # A backend's data directory exists (the driver writes its firewall zones there without making it)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.driver = NetworkDriver(self.settings)
        self._op = self._sync_op()

    def _sync_op(self) -> Op:
        return next(op for op in ops(self.driver) if op.name == "net.sync")

    def sync(self, body: dict[str, Any]) -> None:
        self._op.args.check(body)
        self._op.handler(body)

    def retune(self, underlay_mtu: int) -> None:
        """A backend restarted with another ``network.underlay_mtu``."""
        self.driver.close()
        self.settings = dataclasses.replace(self.settings, underlay_mtu=underlay_mtu)
        self.driver = NetworkDriver(self.settings)
        self._op = self._sync_op()

    def dhcp_cpu(self, vni: int) -> tuple[int, float] | None:
        """The pid of the DHCP server of ``vni`` and its CPU seconds so far, while it runs."""
        try:
            pid = int((self.settings.state_dir / "dhcp" / str(vni) / "pid").read_text())
        except (OSError, ValueError):
            return None
        cpu = _proc_cpu(pid)
        return None if cpu is None else (pid, cpu)

    def close(self) -> None:
        self.driver.close()


# Namespaces and links ---------------------------------------------------------------------------


def _index(ns: Any, name: str) -> int:
    found = ns.link_lookup(ifname=name)
    if not found:
        raise RuntimeError(f"no link {name}")
    return int(found[0])


def _address(namespace: str, device: str, ip: str, prefixlen: int, mtu: int) -> None:
    with NetNS(namespace) as ns:
        index = _index(ns, device)
        ns.addr("add", index=index, address=ip, prefixlen=prefixlen)
        ns.link("set", index=index, mtu=mtu, state="up")


def _set_mtu(namespace: str, device: str, mtu: int) -> None:
    with NetNS(namespace) as ns:
        ns.link("set", index=_index(ns, device), mtu=mtu)


def _write_proc(namespace: str, path: str, value: str) -> str:
    """Write a /proc/sys file as seen from ``namespace``; what it held before."""
    def write() -> str:
        with open(path) as f:
            before = f.read().strip()
        with open(path, "w") as f:
            f.write(value)
        return before
    return run_in(namespace, write)


def _read_proc(namespace: str, path: str) -> str:
    def read() -> str:
        with open(path) as f:
            return f.read().strip()
    return run_in(namespace, read)


def _set_underlay_mtu(lab: NetLab, hypervisors: list[Hypervisor], mtu: int) -> None:
    """The MTU of each hypervisor's underlay link (the one holding its VTEP) and of its peer, the
    underlay bridge's port in the lab's underlay namespace."""
    for hv in hypervisors:
        with NetNS(hv.netns) as ns:
            index = next(int(a["index"]) for a in ns.get_addr(family=socket.AF_INET) if a.get("IFA_ADDRESS") == hv.vtep)
            peer = ns.get_links(index)[0].get("IFLA_LINK")
            with NetNS(lab.namespace) as ul:
                ul.link("set", index=peer, mtu=mtu)
            ns.link("set", index=index, mtu=mtu)


# Ping -------------------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class Pinger:
    """ICMP echo from inside a namespace (a raw socket made there), timed here."""

    def __init__(self, namespace: str) -> None:
        self.sock: socket.socket = run_in(namespace, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                                           socket.IPPROTO_ICMP))
        self.ident = random.randrange(1, 0xFFFF)

    def close(self) -> None:
        self.sock.close()

    def first_reply(self, target: str, started: float, timeout: float = PING_TIMEOUT_S) -> float | None:
        """Echo requests to ``target`` every ``PING_INTERVAL_S`` from now; seconds from ``started``
        (a ``perf_counter``) to the first reply, or None."""
        deadline = time.perf_counter() + timeout
        seq, next_send = 0, time.perf_counter()
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return None
            if now >= next_send:
                seq = (seq + 1) & 0xFFFF
                header = struct.pack("!BBHHH", 8, 0, 0, self.ident, seq)
                payload = struct.pack("!d", now) + b"cloudland-bench"
                packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), self.ident, seq) + payload
                with contextlib.suppress(OSError):  # no neighbour yet: the kernel may refuse a send
                    self.sock.sendto(packet, (target, 0))
                next_send += PING_INTERVAL_S
            readable, _, _ = select.select([self.sock], [], [], max(0.0, min(next_send, deadline) - time.perf_counter()))
            if not readable:
                continue
            data, (source, _) = self.sock.recvfrom(2048)
            at = time.perf_counter()
            offset = (data[0] & 0x0F) * 4
            if len(data) < offset + 8 or source != target:
                continue
            kind, _code, _sum, ident, _seq = struct.unpack("!BBHHH", data[offset:offset + 8])
            if kind == 0 and ident == self.ident:
                return at - started


# The benchmark ----------------------------------------------------------------------------------


class NetBench:
    def __init__(self, cfg: Config, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.lab = NetLab(workdir / "lab", management=False)
        self.hosts: list[Host] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.revisions = Revisions()
        self._vni = 7000
        self.out: dict[str, Any] = {}

    # --- frame ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.lab.open()
        self.out["lab"] = self.lab.token
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "throughput": self.throughput, "ports": self.ports, "ping": self.ping, "fanout": self.fanout}
        for name in self.cfg.sections:
            click.echo(f"{name} ...", err=True)
            started = time.monotonic()
            try:
                self.out[name] = runners[name]()
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - report it, measure the rest
                traceback.print_exc()
                self.out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            self.out[name]["section_wall_s"] = _r(time.monotonic() - started)
        return self.out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.close()
        self.lab.close()

    def _host(self, underlay_mtu: int = 1500) -> Host:
        hv = self.lab.hypervisor()
        host = Host(hv, self.workdir / "state" / hv.name, underlay_mtu)
        self.hosts.append(host)
        return host

    def _network(self, cidr: str, router: bool, dhcp: bool) -> Network:
        self._vni += 1
        return Network(self.revisions, self._vni, cidr, router, dhcp)

    def _guests(self) -> str:
        """One namespace for the far ends of many taps (removed with the lab: it has the lab's prefix)."""
        name = self.lab.prefix + "guests"
        if name not in netns.listnetns():
            netns.create(name)
        return name

    def _namespace(self, suffix: str) -> str:
        name = self.lab.prefix + suffix
        netns.create(name)
        with NetNS(name) as ns:
            ns.link("set", index=_index(ns, "lo"), state="up")
        return name

    # --- 1. throughput ---------------------------------------------------------------------------

    def throughput(self) -> dict[str, Any]:
        cfg = self.cfg
        h1, h2 = self._host(), self._host()
        net = self._network("10.10.0.0/24", router=False, dhcp=False)
        a, b, c = net.port(h1.hv), net.port(h2.hv), net.port(h1.hv)
        vms = {p.ip: self.lab.instance(h.hv, p.id, p.mac) for p, h in ((a, h1), (b, h2), (c, h1))}
        for host in (h1, h2):
            host.sync(net.body())
        guest_mtu = h1.settings.mtu
        for ip, vm in vms.items():
            _address(vm.netns, "eth0", ip, 24, guest_mtu)
        va, vb, vc = vms[a.ip], vms[b.ip], vms[c.ip]
        with NetNS(va.netns) as ns:
            ns.link("add", ifname="ref0", kind="veth", mtu=REFERENCE_MTU,
                    peer={"ifname": "ref0", "net_ns_fd": vb.netns, "mtu": REFERENCE_MTU})
        _address(va.netns, "ref0", "10.255.0.1", 30, REFERENCE_MTU)
        _address(vb.netns, "ref0", "10.255.0.2", 30, REFERENCE_MTU)
        targets = {"veth": "10.255.0.2", "vxlan": b.ip, "bridge": c.ip}
        for vm in (vb, vc):
            self.procs.append(subprocess.Popen([*netns_argv(vm.netns), "iperf3", "-s", "-p", str(IPERF_PORT)],
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        default_cc = _read_proc(va.netns, "/proc/sys/net/ipv4/tcp_congestion_control")
        available = _read_proc(va.netns, "/proc/sys/net/ipv4/tcp_available_congestion_control").split()
        ccs = [default_cc] + [cc for cc in cfg.congestion if cc != default_cc and cc in available]
        runs = []
        for variant in cfg.variants:
            restore: list[tuple[str, str, str]] = []
            firewall = variant not in ("unfirewalled", "no-br-netfilter")
            if net.firewall != firewall:
                net.firewall = firewall
                for host in (h1, h2):
                    host.sync(net.body())
            if variant == "no-br-netfilter":
                for host in (h1, h2):
                    for table in BRIDGE_NF:
                        path = f"/proc/sys/net/bridge/bridge-nf-call-{table}"
                        restore.append((host.hv.netns, path, _write_proc(host.hv.netns, path, "0")))
            elif variant == "jumbo":
                _set_underlay_mtu(self.lab, [h1.hv, h2.hv], JUMBO_MTU)
                for host in (h1, h2):
                    host.retune(JUMBO_MTU)
                    host.sync(net.body())
                for vm in vms.values():
                    _set_mtu(vm.netns, "eth0", h1.settings.mtu)
            try:
                samples: dict[str, dict[str, list[dict[str, Any]]]] = {cc: {p: [] for p in PATHS} for cc in ccs}
                for _ in range(cfg.rounds):
                    for cc in ccs:
                        for path in PATHS:
                            samples[cc][path].append(self._iperf(va.netns, targets[path], cc))
            finally:
                for namespace, path, value in restore:
                    _write_proc(namespace, path, value)
            for cc in ccs:
                runs.append(self._throughput_run(variant, h1.settings.underlay_mtu, h1.settings.mtu, cc, firewall,
                                                 samples[cc]))
        out: dict[str, Any] = {"default_congestion_control": default_cc, "seconds": cfg.seconds,
                               "rounds": cfg.rounds, "parallel": cfg.parallel, "reference_mtu": REFERENCE_MTU,
                               "runs": runs}

        def pick(variant: str, cc: str) -> dict[str, Any] | None:
            return next((r for r in runs if r["variant"] == variant and r["congestion_control"] == cc), None)

        base = pick("base", default_cc) or {}
        out.update({
            "vxlan_veth_ratio": base.get("vxlan_veth_ratio"),
            "vxlan_gbps": base.get("vxlan", {}).get("gbps"), "veth_gbps": base.get("veth", {}).get("gbps"),
            "bridge_gbps": base.get("bridge", {}).get("gbps"),
            "vxlan_cpu_s_per_gb": base.get("vxlan", {}).get("cpu_s_per_gb"),
            "veth_cpu_s_per_gb": base.get("veth", {}).get("cpu_s_per_gb"),
            "vxlan_veth_cpu_ratio": base.get("vxlan_veth_cpu_ratio")})
        for variant in ("unfirewalled", "no-br-netfilter", "jumbo"):
            run = pick(variant, default_cc)
            out[f"vxlan_veth_ratio_{variant.replace('-', '_')}"] = run["vxlan_veth_ratio"] if run else None
        for cc in ccs[1:]:
            run = pick("base", cc)
            out[f"vxlan_veth_ratio_{cc}"] = run["vxlan_veth_ratio"] if run else None
        return out

    def _iperf(self, namespace: str, target: str, cc: str) -> dict[str, Any]:
        argv = [*netns_argv(namespace), "iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(self.cfg.seconds),
                "-P", str(self.cfg.parallel), "-C", cc, "-J"]
        for attempt in range(50):  # the server may still be starting
            run = subprocess.run(argv, capture_output=True, text=True, timeout=self.cfg.seconds + 60, check=False)
            try:
                result = json.loads(run.stdout)
            except ValueError:
                result = {"error": run.stdout[-300:] + run.stderr[-300:]}
            if "error" not in result:
                break
            if attempt == 49 or "connect" not in str(result["error"]):
                raise RuntimeError(f"iperf3 to {target}: {result['error']}")
            time.sleep(0.1)
        end = result["end"]
        received, sent = end["sum_received"], end["sum_sent"]
        cpu = end["cpu_utilization_percent"]
        seconds = float(sent["seconds"])
        gigabytes = float(received["bytes"]) / 1e9
        cpu_s = (float(cpu["host_total"]) + float(cpu["remote_total"])) / 100 * seconds
        return {"gbps": float(received["bits_per_second"]) / 1e9, "cpu_s_per_gb": cpu_s / gigabytes if gigabytes else None,
                "retransmits": sent.get("retransmits")}

    @staticmethod
    def _throughput_run(variant: str, underlay_mtu: int, guest_mtu: int, cc: str, firewall: bool,
                        samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        run: dict[str, Any] = {"variant": variant, "underlay_mtu": underlay_mtu, "guest_mtu": guest_mtu,
                               "congestion_control": cc, "firewall": firewall}
        for path, results in samples.items():
            run[path] = {"gbps": _median([r["gbps"] for r in results]),
                         "cpu_s_per_gb": _median([r["cpu_s_per_gb"] for r in results if r["cpu_s_per_gb"] is not None]),
                         "retransmits": _median([r["retransmits"] for r in results if r["retransmits"] is not None]),
                         "samples_gbps": [_r(r["gbps"], 3) for r in results]}
        run["vxlan_veth_ratio"] = _ratio(run["vxlan"]["gbps"], run["veth"]["gbps"])
        run["bridge_veth_ratio"] = _ratio(run["bridge"]["gbps"], run["veth"]["gbps"])
        # CPU per byte, the other way round: above 1 would be VXLAN cheaper than the plain link
        run["vxlan_veth_cpu_ratio"] = _ratio(run["veth"]["cpu_s_per_gb"], run["vxlan"]["cpu_s_per_gb"])
        return run

    # --- 2. ports --------------------------------------------------------------------------------

    def ports(self) -> dict[str, Any]:
        n = self.cfg.ports
        host = self._host()
        guests = self._guests()
        net = self._network("10.20.0.0/16", router=True, dhcp=True)
        creates: list[Span] = []
        deletes: list[Span] = []
        wires: list[Span] = []
        unwires: list[Span] = []
        dhcp = DhcpMeter(host, net.vni)
        wall = time.perf_counter()
        with NetNS(host.hv.netns) as ns:
            for i in range(n):
                port = net.port(host.hv)
                with measured(creates):
                    # what libvirt does for a guest's NIC, as `ip link add`: the bare kernel cost
                    ns.link("add", ifname=tap_name(port.id), kind="veth",
                            peer={"ifname": "g" + port.id[:11], "net_ns_fd": guests})
                with measured(wires):
                    host.sync(net.body())
                dhcp.sample()
            wire_wall = time.perf_counter() - wall
            dhcp_wire = dhcp.take()
            wall = time.perf_counter()
            while net.ports:
                port = net.ports.pop()
                with measured(deletes):
                    ns.link("del", ifname=tap_name(port.id))
                if not net.ports:
                    dhcp.sample()  # the last sync stops (and reaps) the DHCP server
                with measured(unwires):
                    host.sync(net.body())
                dhcp.sample()
            unwire_wall = time.perf_counter() - wall
            dhcp_unwire = dhcp.take()
        # A reaped DHCP server's whole life is in the children's CPU of the sync that stopped it:
        # it is counted as the DHCP server's, not twice.
        if unwires and dhcp.reaped_cpu:
            unwires[-1].cpu_s -= dhcp.reaped_cpu
        wire, unwire = _spans(wires), _spans(unwires)
        create, delete = _spans(creates), _spans(deletes)
        at = {str(k): _r(wires[k - 1].wall_s) for k in MILESTONES if k <= len(wires)}
        at[str(len(wires))] = _r(wires[-1].wall_s) if wires else None
        return {
            "ports": n, "wire": wire, "unwire": unwire, "reference_veth_create": create,
            "reference_veth_delete": delete, "wire_sync_s_at_ports": at,
            "wire_loop_wall_s": _r(wire_wall), "unwire_loop_wall_s": _r(unwire_wall),
            "dhcp_cpu_s_wire": _r(dhcp_wire), "dhcp_cpu_s_unwire": _r(dhcp_unwire),
            "wire_p50_s": wire["p50_s"], "wire_p90_s": wire["p90_s"], "wire_wall_s": wire["wall_s"],
            "wire_cpu_s": _r(wire["cpu_s"] + dhcp_wire), "unwire_p50_s": unwire["p50_s"],
            "unwire_p90_s": unwire["p90_s"], "unwire_wall_s": unwire["wall_s"],
            "unwire_cpu_s": _r(unwire["cpu_s"] + dhcp_unwire),
            "reference_create_p50_s": create["p50_s"], "reference_create_p90_s": create["p90_s"],
            "reference_create_wall_s": create["wall_s"], "reference_create_cpu_s": create["cpu_s"],
            "reference_delete_p50_s": delete["p50_s"], "reference_delete_p90_s": delete["p90_s"],
            "reference_delete_wall_s": delete["wall_s"], "reference_delete_cpu_s": delete["cpu_s"],
        }

    # --- 3. ping ---------------------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        ha, hb = self._host(), self._host()
        net = self._network("10.30.0.0/24", router=True, dhcp=True)
        a = net.port(ha.hv)
        va = self.lab.instance(ha.hv, a.id, a.mac)
        ha.sync(net.body())
        _address(va.netns, "eth0", a.ip, 24, ha.settings.mtu)
        _write_proc(va.netns, "/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms", str(ARP_RETRANS_MS))
        pinger = Pinger(va.netns)
        try:
            # The network's first port on host B (the host builds the network there), then ports
            # added to a network both hosts carry: the trials.
            first = self._ping_trial(net, ha, hb, pinger)
            trials = []
            for _ in range(self.cfg.ping_trials):
                trials.append(self._ping_trial(net, ha, hb, pinger))
            references = []
            for k in range(self.cfg.ping_trials):
                far = self._namespace(f"rp{k}")
                ours, theirs = f"10.254.{k}.1", f"10.254.{k}.2"
                with NetNS(va.netns) as ns, NetNS(far) as fns:  # handles opened before: not the kernel's cost
                    started = time.perf_counter()
                    ns.link("add", ifname=f"rp{k}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": far})
                    for handle, device, address in ((fns, "eth0", theirs), (ns, f"rp{k}", ours)):
                        index = _index(handle, device)
                        handle.addr("add", index=index, address=address, prefixlen=30)
                        handle.link("set", index=index, state="up")
                    references.append(pinger.first_reply(theirs, started))
        finally:
            pinger.close()
        pings = [t["ping_s"] for t in trials if t["ping_s"] is not None]
        syncs = [max(t["sync_a_s"], t["sync_b_s"]) for t in trials]
        refs = [r for r in references if r is not None]
        return {"trials": trials, "first_port_on_host": first, "unanswered": len(trials) - len(pings),
                "interval_s": PING_INTERVAL_S, "arp_retrans_ms": ARP_RETRANS_MS,
                "create_to_ping_p50_s": _pct(pings, 50), "create_to_ping_p90_s": _pct(pings, 90),
                "create_to_ping_max_s": _r(max(pings)) if pings else None, "sync_both_p50_s": _pct(syncs, 50),
                "first_port_on_host_ping_s": first["ping_s"],
                "reference_veth_to_ping_p50_s": _pct(refs, 50), "reference_unanswered": len(references) - len(refs)}

    def _ping_trial(self, net: Network, ha: Host, hb: Host, pinger: Pinger) -> dict[str, Any]:
        """A new port's instance on host B (its tap made, as libvirt makes it before the sync), the
        network synced to both hosts at once, echo requests from A's instance from the start."""
        port = net.port(hb.hv)
        vm = self.lab.instance(hb.hv, port.id, port.mac)
        _address(vm.netns, "eth0", port.ip, 24, hb.settings.mtu)
        _write_proc(vm.netns, "/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms", str(ARP_RETRANS_MS))
        body = net.body()
        synced: dict[str, float] = {}
        errors: list[BaseException] = []

        def sync(host: Host, started: float) -> None:
            try:
                host.sync(body)
                synced[host.hv.name] = time.perf_counter() - started
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        started = time.perf_counter()
        threads = [threading.Thread(target=sync, args=(h, started)) for h in (ha, hb)]
        for thread in threads:
            thread.start()
        first = pinger.first_reply(port.ip, started)
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return {"ping_s": _r(first), "sync_a_s": _r(synced[ha.hv.name]), "sync_b_s": _r(synced[hb.hv.name])}

    # --- 4. fan-out ------------------------------------------------------------------------------

    def fanout(self) -> dict[str, Any]:
        cfg = self.cfg
        host = self._host()
        guests = self._guests()
        net = self._network("10.40.0.0/16", router=True, dhcp=True)
        remote = [str(FANOUT_VTEPS + h) for h in range(cfg.fanout_hosts)]
        for vtep in remote:
            for _ in range(cfg.fanout_ports_per_host):
                net.port(vtep)
        local = net.port(host.hv)
        with NetNS(host.hv.netns) as ns:
            ns.link("add", ifname=tap_name(local.id), kind="veth", peer={"ifname": "g" + local.id[:11], "net_ns_fd": guests})
        remote_ports = list(net.ports[:-1])
        fulls: list[Span] = []
        removals: list[Span] = []
        for _ in range(cfg.fanout_full_trials):
            with measured(fulls):
                host.sync(net.body())
            net.ports.remove(local)
            with measured(removals):
                host.sync(net.body())  # no port here any more: the host drops the network whole
            net.ports.append(local)
        host.sync(net.body())
        adds: list[Span] = []
        for t in range(cfg.fanout_trials):
            net.port(remote[t % len(remote)])
            with measured(adds):
                host.sync(net.body())
        full, removal, add = _spans(fulls), _spans(removals), _spans(adds)
        bare_full, bare_add = self._bare_entries(host, remote_ports, cfg.fanout_trials)
        return {"hosts": cfg.fanout_hosts, "remote_ports": len(remote_ports), "full": full, "removal": removal,
                "add_port": add, "reference_bare_full": bare_full, "reference_bare_add": bare_add,
                "add_port_p50_s": add["p50_s"], "add_port_cpu_s_per_sync": _r(add["cpu_s"] / max(1, add["n"])),
                "full_p50_s": full["p50_s"], "full_cpu_s_per_sync": _r(full["cpu_s"] / max(1, full["n"])),
                "removal_p50_s": removal["p50_s"],
                "reference_bare_full_p50_s": bare_full["p50_s"], "reference_bare_add_p50_s": bare_add["p50_s"]}

    def _bare_entries(self, host: Host, remote: list[Port], trials: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The same entries written by bare pyroute2 calls on a scratch bridge and VXLAN device:
        per port an FDB entry on the device (MAC -> VTEP), one on the bridge, a permanent neighbour."""
        fulls: list[Span] = []
        adds: list[Span] = []
        vni = 9_999_001
        with NetNS(host.hv.netns) as ns:
            ns.link("add", ifname="rfb0", kind="bridge", br_stp_state=0, br_forward_delay=0)
            for t in range(self.cfg.fanout_full_trials):
                ns.link("add", ifname="rfx0", kind="vxlan", vxlan_id=vni, vxlan_local=host.hv.vtep, vxlan_port=4789,
                        vxlan_learning=0, vxlan_proxy=1)
                index = _index(ns, "rfx0")
                ns.link("set", index=index, master=_index(ns, "rfb0"), state="up")
                with measured(fulls):
                    for port in remote:
                        _bare_port(ns, index, port)
                if t == self.cfg.fanout_full_trials - 1:
                    for k in range(trials):
                        port = Port("", "52:54:ff:00:%02x:%02x" % (k >> 8 & 0xff, k & 0xff),
                                    str(ipaddress.IPv4Address("10.41.0.10") + k), remote[k % len(remote)].vtep)
                        with measured(adds):
                            _bare_port(ns, index, port)
                ns.link("del", index=index)
            ns.link("del", index=_index(ns, "rfb0"))
        return _spans(fulls), _spans(adds)


def _bare_port(ns: Any, index: int, port: Port) -> None:
    ns.fdb("replace", ifindex=index, lladdr=port.mac, dst=port.vtep, state=0x80, flags=0x02)  # permanent, self
    ns.fdb("replace", ifindex=index, lladdr=port.mac, state=0x40, flags=0x04)  # noarp, master
    ns.neigh("replace", dst=port.ip, lladdr=port.mac, ifindex=index, state=0x80)


class DhcpMeter:
    """CPU seconds of a network's DHCP server on a host, sampled from /proc while it runs."""

    def __init__(self, host: Host, vni: int) -> None:
        self.host = host
        self.vni = vni
        self._running: dict[int, float] = {}
        #: the last CPU seen of servers the driver has stopped since (reaped: now in the children's CPU)
        self.reaped_cpu = 0.0
        self._taken = 0.0

    def sample(self) -> None:
        now = self.host.dhcp_cpu(self.vni)
        for pid in [p for p in self._running if now is None or now[0] != p]:
            self.reaped_cpu += self._running.pop(pid)
        if now is not None:
            self._running[now[0]] = now[1]

    def take(self) -> float:
        """CPU seconds since the last take."""
        total = self.reaped_cpu + sum(self._running.values())
        spent, self._taken = total - self._taken, total
        return spent


# Output -----------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            text = "0"
        elif abs(value) < 0.01:
            text = f"{value * 1000:.2f} ms" if unit == "s" else f"{value:.4f}"
            return text
        else:
            text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip() if unit else text


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(out: dict[str, Any]) -> str:
    lines = [f"bench.net on {out['kernel']}, {out['cpus']} CPUs, {out['date']}"]
    t = out.get("throughput")
    if t is not None:
        lines += ["", f"1. TCP instance to instance, iperf3 {t.get('seconds')} s x {t.get('rounds')} rounds, "
                      f"{t.get('parallel')} stream(s): median Gbit/s (CPU s per GB)"]
        if "error" in t:
            lines.append(f"   error: {t['error']}")
        rows = [["variant", "underlay/guest MTU", "cc", "veth (reference)", "VXLAN, 2 hosts", "bridge, 1 host",
                 "VXLAN/veth", "CPU veth/VXLAN"]]
        for run in t.get("runs", []):
            rows.append([run["variant"], f"{run['underlay_mtu']}/{run['guest_mtu']}", run["congestion_control"]]
                        + [f"{_fmt(run[p]['gbps'])} ({_fmt(run[p]['cpu_s_per_gb'])})" for p in PATHS]
                        + [_fmt(run["vxlan_veth_ratio"]), _fmt(run["vxlan_veth_cpu_ratio"])])
        if len(rows) > 1:
            lines += _table(rows)
    p = out.get("ports")
    if p is not None:
        lines += ["", f"2. {p.get('ports')} ports on one hypervisor, one net.sync per port (one network)"]
        if "error" in p:
            lines.append(f"   error: {p['error']}")
        else:
            rows = [["", "per port p50", "p90", "max", "wall", "CPU s"]]
            for title, key in (("wire (net.sync)", "wire"), ("unwire (net.sync)", "unwire"),
                               ("reference: veth create", "reference_veth_create"),
                               ("reference: veth delete", "reference_veth_delete")):
                s = p[key]
                cpu = p.get(f"{key}_cpu_s", s["cpu_s"])
                rows.append([title, _fmt(s["p50_s"], "s"), _fmt(s["p90_s"], "s"), _fmt(s["max_s"], "s"),
                             _fmt(s["wall_s"], "s"), _fmt(cpu)])
            lines += _table(rows)
            lines.append("   wire sync at N ports: " + ", ".join(f"{k}: {_fmt(v, 's')}"
                                                                 for k, v in p["wire_sync_s_at_ports"].items()))
            lines.append(f"   DHCP server CPU s (in the wire/unwire CPU): {_fmt(p['dhcp_cpu_s_wire'])} / "
                         f"{_fmt(p['dhcp_cpu_s_unwire'])}")
    g = out.get("ping")
    if g is not None:
        lines += ["", "3. port created on host B, synced to both hosts -> first ping from host A"]
        if "error" in g:
            lines.append(f"   error: {g['error']}")
        else:
            lines.append(f"   p50 {_fmt(g['create_to_ping_p50_s'], 's')}, p90 {_fmt(g['create_to_ping_p90_s'], 's')} "
                         f"over {len(g['trials'])} trials ({g['unanswered']} unanswered); both syncs p50 "
                         f"{_fmt(g['sync_both_p50_s'], 's')}; reference (plain veth made, then first ping) p50 "
                         f"{_fmt(g['reference_veth_to_ping_p50_s'], 's')}")
            first = g["first_port_on_host"]
            lines.append(f"   the network's first port on host B (built there): {_fmt(first['ping_s'], 's')}, its sync "
                         f"on B {_fmt(first['sync_b_s'], 's')}")
    f = out.get("fanout")
    if f is not None:
        lines += ["", f"4. one network over {f.get('hosts')} hypervisors: one host applies a sync"]
        if "error" in f:
            lines.append(f"   error: {f['error']}")
        else:
            rows = [["", "p50", "CPU s per sync", "reference: bare netlink p50"],
                    ["adds one remote port", _fmt(f["add_port_p50_s"], "s"), _fmt(f["add_port_cpu_s_per_sync"]),
                     _fmt(f["reference_bare_add_p50_s"], "s")],
                    [f"whole body from scratch ({f['remote_ports']} remote ports)", _fmt(f["full_p50_s"], "s"),
                     _fmt(f["full_cpu_s_per_sync"]), _fmt(f["reference_bare_full_p50_s"], "s")],
                    ["removes the network", _fmt(f["removal_p50_s"], "s"), _fmt(_r(f["removal"]["cpu_s"] /
                                                                                  max(1, f["removal"]["n"]))), "-"]]
            lines += _table(rows)
    if out.get("interrupted"):
        lines.append("\ninterrupted: the section under way is not reported")
    if out.get("error"):
        lines.append(f"\nstopped by an error: {out['error']}")
    lines.append(f"\nrun: {_fmt(out.get('wall_s'), 's')}")
    return "\n".join(lines)


UNITS = {
    "vxlan_veth_ratio": "VXLAN / veth throughput (medians)", "vxlan_gbps": "Gbit/s", "veth_gbps": "Gbit/s",
    "bridge_gbps": "Gbit/s", "vxlan_cpu_s_per_gb": "CPU s per GB", "veth_cpu_s_per_gb": "CPU s per GB",
    "vxlan_veth_cpu_ratio": "veth CPU per GB / VXLAN CPU per GB",
    "wire_p50_s": "s per port (one net.sync)", "wire_p90_s": "s per port", "wire_wall_s": "s (all syncs)",
    "wire_cpu_s": "CPU s (process + children + DHCP server)", "unwire_p50_s": "s per port",
    "reference_create_p50_s": "s per veth (bare pyroute2)", "create_to_ping_p50_s": "s",
    "reference_veth_to_ping_p50_s": "s", "add_port_p50_s": "s per sync", "full_p50_s": "s per sync",
    "add_port_cpu_s_per_sync": "CPU s", "full_cpu_s_per_sync": "CPU s", "reference_bare_full_p50_s": "s",
}


def _figures(out: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, flat at the top of the JSON."""
    flat: dict[str, Any] = {}
    for section, keys in (("throughput", ("vxlan_veth_ratio", "vxlan_gbps", "veth_gbps", "bridge_gbps",
                                          "vxlan_cpu_s_per_gb", "veth_cpu_s_per_gb", "vxlan_veth_cpu_ratio",
                                          "vxlan_veth_ratio_unfirewalled", "vxlan_veth_ratio_no_br_netfilter",
                                          "vxlan_veth_ratio_jumbo",
                                          "vxlan_veth_ratio_cubic")),
                          ("ports", ("wire_p50_s", "wire_p90_s", "wire_wall_s", "wire_cpu_s", "unwire_p50_s",
                                     "unwire_p90_s", "unwire_wall_s", "unwire_cpu_s", "reference_create_p50_s",
                                     "reference_create_p90_s", "reference_create_wall_s", "reference_create_cpu_s",
                                     "reference_delete_p50_s", "reference_delete_wall_s", "reference_delete_cpu_s")),
                          ("ping", ("create_to_ping_p50_s", "create_to_ping_p90_s", "sync_both_p50_s",
                                    "first_port_on_host_ping_s", "reference_veth_to_ping_p50_s")),
                          ("fanout", ("add_port_p50_s", "add_port_cpu_s_per_sync", "full_p50_s",
                                      "full_cpu_s_per_sync", "removal_p50_s", "reference_bare_add_p50_s",
                                      "reference_bare_full_p50_s"))):
        data = out.get(section) or {}
        for key in keys:
            name = key if section in ("throughput",) else f"{section}_{key}"
            flat[name] = data.get(key)
    return flat


def _commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


def _iperf_version() -> str:
    done = subprocess.run(["iperf3", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


#: this run's process: pyroute2 forks short-lived children (a socket opened in a namespace), which
#: inherit the signal handlers and must never run the benchmark's code on from a signal
_MAIN_PID = os.getpid()


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    if os.getpid() != _MAIN_PID:
        os._exit(1)
    raise KeyboardInterrupt()


def _announce_cleanup(_signum: int, _frame: FrameType | None) -> None:
    if os.getpid() != _MAIN_PID:
        os._exit(1)
    print("removing this run's namespaces and processes; a moment", file=sys.stderr)


def _names(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise click.BadParameter(f"{text!r}: a comma-separated list of {', '.join(allowed)}")
    return names


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Where to write the results [default: bench/results/net-<timestamp>.json].")
@click.option("--quick", is_flag=True, help="A smoke run: every section, small (seconds, not the full figures).")
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="Sections, comma-separated.")
@click.option("--seconds", type=click.IntRange(1), help=f"iperf3's duration per run [default: {Config.seconds}].")
@click.option("--rounds", type=click.IntRange(1), help=f"Runs per path and variant [default: {Config.rounds}].")
@click.option("--parallel", type=click.IntRange(1), help="iperf3's streams [default: 1].")
@click.option("--variants", help=f"Throughput variants [default: {','.join(VARIANTS)}].")
@click.option("--congestion", help="TCP congestion controls beside the machine's default [default: cubic]; "
                                   "'none' for the default only.")
@click.option("--ports", type=click.IntRange(1), help=f"Ports wired and unwired [default: {Config.ports}].")
@click.option("--ping-trials", type=click.IntRange(1), help=f"[default: {Config.ping_trials}]")
@click.option("--fanout-hosts", type=click.IntRange(1, 60000), help=f"[default: {Config.fanout_hosts}]")
@click.option("--fanout-ports-per-host", type=click.IntRange(1), help="[default: 1]")
def main(json_path: str | None, quick: bool, sections: str, seconds: int | None, rounds: int | None,
         parallel: int | None, variants: str | None, congestion: str | None, ports: int | None,
         ping_trials: int | None, fanout_hosts: int | None, fanout_ports_per_host: int | None) -> None:
    """Tenant networks' data path and control path on namespace hypervisors (see the module's docstring)."""
    cfg = QUICK if quick else Config()
    changes: dict[str, Any] = {"sections": _names(sections, SECTIONS)}
    for name, value in (("seconds", seconds), ("rounds", rounds), ("parallel", parallel), ("ports", ports),
                        ("ping_trials", ping_trials), ("fanout_hosts", fanout_hosts),
                        ("fanout_ports_per_host", fanout_ports_per_host)):
        if value is not None:
            changes[name] = value
    if variants is not None:
        changes["variants"] = _names(variants, VARIANTS)
    if congestion is not None:
        changes["congestion"] = () if congestion == "none" else tuple(c.strip() for c in congestion.split(",") if c)
    cfg = dataclasses.replace(cfg, **changes)
    if os.geteuid() != 0:
        raise click.ClickException("needs root: network namespaces")
    if "throughput" in cfg.sections and shutil.which("iperf3") is None:
        raise click.ClickException("iperf3 is missing (sh scripts/ensure-test-tools.sh installs it)")
    setup_logging("warning", service="bench-net")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="cloudland-bench-net-"))
    bench = NetBench(cfg, workdir)
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": platform.release(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "commit": _commit(), "iperf3": _iperf_version(), "python": platform.python_version(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()], "quick": quick,
        "config": dataclasses.asdict(cfg), "units": UNITS}
    status = 0
    started = time.monotonic()
    try:
        out.update(bench.run())
    except KeyboardInterrupt:
        out.update(bench.out)
        out["interrupted"] = True
        status = 130
    except Exception as exc:  # noqa: BLE001 - still clean up and report what was measured
        traceback.print_exc()
        out.update(bench.out)
        out["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _announce_cleanup)
        try:
            bench.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    out["wall_s"] = _r(time.monotonic() - started)
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if any(isinstance(out.get(s), dict) and "error" in out[s] for s in cfg.sections):
        status = status or 1
    result = {**_figures(out), **out}
    path = Path(json_path) if json_path else RESULTS_DIR / f"net-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(format_table(out))
    click.echo(f"\nwritten to {path}")
    sys.exit(status)


if __name__ == "__main__":
    main()
