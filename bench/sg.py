"""Security groups on namespace hypervisors: ``python -m bench.sg``.

The port firewall (``backend.network.firewall.Firewall``) on one lab of
``localcluster/netlab.py`` (namespace hypervisors on an underlay bridge, no management link), the
bridges and taps made by the real ``NetworkDriver`` of each hypervisor (a ``net.sync`` whose ports
name no group, so the driver firewalls nothing itself), then ``FirewallState``s applied to the
hypervisor's ``Firewall`` as the driver's port security would.  Three sections, each beside a
reference measured in the same run:

1. ``apply``: 1,000 rules over 100 ports of one hypervisor (10 per port: CIDR, remote-group,
   port-range and ICMP rules; the ports are taps, veth pairs whose far ends share one namespace,
   plugged into their bridge by the driver).  Wall and CPU seconds of the first apply, of a
   re-apply of the same state (the rules are compared with what the object wrote: near a no-op),
   of the same state by a new ``Firewall`` (a restarted backend: it decodes the kernel's rules),
   and of a change of one port's rules.  Reference: the same 1,000 rules appended with
   python-iptables to one plain chain of a scratch namespace (with the same ipsets) in one commit.
2. ``group``: 10 hypervisors, each with a port whose rules name group G; a new member joins G,
   and each host's ``Firewall`` applies the new state, one after the other as each backend would
   on its own: the per-host p50 and max (what hosts working in parallel would see).  On host 1
   the new member (an instance on host 2, through VXLAN) is refused before, and after the apply
   a TCP connect from it is retried until it succeeds.  Reference: the bare ipset add of one
   address (pyroute2) on each host.
3. ``throughput``: TCP (iperf3) between two instances of one hypervisor, the server's port
   firewalled with 100 ingress rules whose last lets the client in (the client's port: all
   egress), beside the same path with no firewall (no port of the host firewalled: no chain of
   ours, as a host without security groups), alternating round by round.  ``rules_none_ratio``
   is the median throughput with the rules over the one without; target >= 0.9.

CPU seconds are this process's (``time.process_time()``, every thread) plus its reaped children's.
Everything the run makes is in the lab's namespaces and a temporary directory: both are removed
at the end, after a failure, Ctrl-C or SIGTERM too (every process in the lab's namespaces is
killed first); what a SIGKILLed run left is removed by the next lab to open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click
import iptc
from pyroute2 import NetNS, netns
from pyroute2.ipset import IPSet

from backend.network.driver import NetworkDriver, NetworkSettings
from backend.network.firewall import Firewall
from backend.network.firewall_state import ICMP, TCP, UDP, FirewallState, PortFirewall, Rule
from backend.network.names import bridge as bridge_name
from backend.network.namespaces import run_in
from backend.network.netfilter import fresh_tables
from backend.network.spec import desired_state
from backend.ports import tap_name
from localcluster.netlab import Hypervisor, NetLab, netns_argv
from service.logs import setup_logging

RESULTS_DIR = Path(__file__).parent / "results"
SECTIONS = ("apply", "group", "throughput")
IPERF_PORT = 5201
PROBE_PORT = 2222
RULES_PER_PORT = 10
#: how long one connect attempt of the new member waits before the next (a new flow)
PROBE_TIMEOUT_S = 0.2
PROBE_DEADLINE_S = 10.0
TARGET_RATIO = 0.9


@dataclass(frozen=True)
class Config:
    sections: tuple[str, ...] = SECTIONS
    ports: int = 100
    hosts: int = 10
    #: addresses already in group G before the new member joins
    members: int = 50
    throughput_rules: int = 100
    seconds: int = 3
    rounds: int = 3


QUICK = Config(ports=10, hosts=3, members=5, throughput_rules=20, seconds=1, rounds=1)


# Measuring ------------------------------------------------------------------------------------


def _cpu() -> float:
    """CPU seconds of this process (every thread) and its reaped children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass
class Span:
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def as_dict(self) -> dict[str, float | None]:
        return {"wall_s": _r(self.wall_s), "cpu_s": _r(self.cpu_s)}


@contextlib.contextmanager
def measured() -> Iterator[Span]:
    span = Span()
    wall, cpu = time.perf_counter(), _cpu()
    try:
        yield span
    finally:
        span.wall_s, span.cpu_s = time.perf_counter() - wall, _cpu() - cpu


def _r(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# The lab ----------------------------------------------------------------------------------------


@dataclass
class Port:
    id: str
    mac: str
    ip: str
    vtep: str
    tap: str
    bridge: str


class Network:
    """One network of one subnet without DHCP or router: what the driver needs to plug ports."""

    def __init__(self, vni: int, cidr: str) -> None:
        self.vni, self.cidr = vni, cidr
        self.id, self.subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.ports: list[Port] = []

    @property
    def bridge(self) -> str:
        return bridge_name(self.vni)

    def port(self, host: Hypervisor) -> Port:
        n = len(self.ports) + 1
        net = ipaddress.IPv4Network(self.cidr)
        port_id = str(uuid.uuid4())
        mac = "52:54:%02x:%02x:%02x:%02x" % (self.vni & 0xff, n >> 16 & 0xff, n >> 8 & 0xff, n & 0xff)
        port = Port(port_id, mac, str(net.network_address + 10 + n), host.vtep, tap_name(port_id), self.bridge)
        self.ports.append(port)
        return port

    def body(self) -> dict[str, Any]:
        net = ipaddress.IPv4Network(self.cidr)
        return {"revision": time.time_ns(), "scope": [self.id], "networks": [{
            "id": self.id, "router": False, "snat": False, "external": None, "floating_ips": [],
            "subnets": [{"id": self.subnet_id, "vni": self.vni, "cidr": self.cidr,
                         "gateway": str(net.network_address + 1), "dhcp": False, "dns_servers": []}],
            "ports": [{"id": p.id, "subnet_id": self.subnet_id, "mac": p.mac, "ip": p.ip, "vtep": p.vtep}
                      for p in self.ports]}]}


class Host:
    """A namespace hypervisor, its network driver and its firewall."""

    def __init__(self, hv: Hypervisor, state_dir: Path) -> None:
        self.hv = hv
        state_dir.mkdir(parents=True, exist_ok=True)
        self.driver = NetworkDriver(NetworkSettings(host=hv.name, vtep=hv.vtep, state_dir=state_dir,
                                                    namespace_prefix=hv.namespace_prefix, netns=hv.netns))
        self.firewall = Firewall(hv.netns)

    def sync(self, net: Network) -> None:
        self.driver.sync(desired_state(net.body(), self.hv.vtep))

    def close(self) -> None:
        self.driver.close()


def _fw_port(port: Port, rules: tuple[Rule, ...]) -> PortFirewall:
    return PortFirewall(port.id, port.tap, port.bridge, port.mac, port.ip, rules)


def _mixed_rules(i: int, groups: list[str]) -> tuple[Rule, ...]:
    """Port ``i``'s ten rules: CIDRs, remote groups, port ranges, ICMP; distinct per port."""
    g1, g2 = groups[i % len(groups)], groups[(i + 1) % len(groups)]
    return (
        Rule("ingress", TCP, 22, 22, remote_cidr=f"10.{i % 250}.0.0/16"),
        Rule("ingress", TCP, 8000 + i, 8099 + i, remote_cidr="192.0.2.0/24"),
        Rule("ingress", TCP, 443, 443, remote_group=g1),
        Rule("ingress", UDP, 5000, 5000 + i, remote_group=g2),
        Rule("ingress", ICMP, icmp_type=8),
        Rule("ingress", ICMP, icmp_type=3, icmp_code=4, remote_cidr=f"172.16.{i % 250}.0/24"),
        Rule("ingress", UDP, 10000 + i, 10000 + i, remote_cidr=f"198.51.100.{i % 250}/32"),
        Rule("egress"),
        Rule("egress", TCP, 1, 1024, remote_group=g1),
        Rule("egress", UDP, 53, 53, remote_cidr="9.9.9.9/32"),
    )


def _veth(hv: Hypervisor, tap: str, peer: str, guests: str) -> None:
    with NetNS(hv.netns) as ns:
        ns.link("add", ifname=tap, kind="veth", peer={"ifname": peer, "net_ns_fd": guests})
        ns.link("set", index=ns.link_lookup(ifname=tap)[0], state="up")


def _address(namespace: str, ip: str) -> None:
    with NetNS(namespace) as ns:
        index = ns.link_lookup(ifname="eth0")[0]
        ns.addr("add", index=index, address=ip, prefixlen=24)
        ns.link("set", index=index, state="up")


def _create_sets(ipset: Any, groups: dict[str, frozenset[str]]) -> None:
    for group, members in groups.items():
        name = "clg" + group.replace("-", "")[:20]
        ipset.create(name, stype="hash:ip", family=socket.AF_INET)
        for address in sorted(members):
            ipset.add(name, address, etype="ip")


# The benchmark ----------------------------------------------------------------------------------


class SgBench:
    def __init__(self, cfg: Config, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.lab = NetLab(workdir / "lab", management=False)
        self.hosts: list[Host] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sockets: list[socket.socket] = []
        self.out: dict[str, Any] = {}
        self._vni = 7100

    def run(self) -> dict[str, Any]:
        self.lab.open()
        self.out["lab"] = self.lab.token
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "apply": self.apply, "group": self.group, "throughput": self.throughput}
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
        for sock in self.sockets:
            sock.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.close()
        self.lab.close()

    def _host(self) -> Host:
        hv = self.lab.hypervisor()
        host = Host(hv, self.workdir / "state" / hv.name)
        self.hosts.append(host)
        return host

    def _network(self, cidr: str) -> Network:
        self._vni += 1
        return Network(self._vni, cidr)

    def _namespace(self, suffix: str) -> str:
        name = self.lab.prefix + suffix
        netns.create(name)
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        return name

    # --- 1. apply --------------------------------------------------------------------------------

    def apply(self) -> dict[str, Any]:
        cfg = self.cfg
        host = self._host()
        guests = self._namespace("guests")
        net = self._network("10.20.0.0/16")
        for i in range(cfg.ports):
            port = net.port(host.hv)
            _veth(host.hv, port.tap, f"g{i}", guests)
        host.sync(net)
        group_ids = [str(uuid.uuid4()) for _ in range(10)]
        members = {g: frozenset(f"10.{200 + k}.0.{m}" for m in range(1, 21)) for k, g in enumerate(group_ids)}
        ports = tuple(_fw_port(p, _mixed_rules(i, group_ids)) for i, p in enumerate(net.ports))
        state = FirewallState(ports, members, {net.bridge: 1})
        rules = sum(len(p.rules) for p in ports)

        with measured() as first:
            host.firewall.apply(state)
        with measured() as again:
            host.firewall.apply(state)
        with measured() as restarted:
            Firewall(host.hv.netns).apply(state)  # a restarted backend: compares with the kernel's rules
        changed_rules = _mixed_rules(0, group_ids)[:-1] + (Rule("egress", UDP, 123, 123, remote_cidr="9.9.9.9/32"),)
        changed = dataclasses.replace(state, ports=(_fw_port(net.ports[0], changed_rules),) + ports[1:])
        # host.firewall saw the first apply only: it still knows what it wrote
        with measured() as one_port:
            host.firewall.apply(changed)
        kernel_rules = _count_rules(host.hv.netns)

        reference = self._reference_append(ports, members)
        return {
            "ports": cfg.ports, "rules": rules, "kernel_rules_filter": kernel_rules,
            "first": first.as_dict(), "reapply": again.as_dict(), "restarted_reapply": restarted.as_dict(),
            "one_port_change": one_port.as_dict(), "reference_append": reference.as_dict(),
            "first_wall_s": _r(first.wall_s), "first_cpu_s": _r(first.cpu_s),
            "reapply_wall_s": _r(again.wall_s), "reapply_cpu_s": _r(again.cpu_s),
            "restarted_reapply_wall_s": _r(restarted.wall_s), "restarted_reapply_cpu_s": _r(restarted.cpu_s),
            "one_port_change_wall_s": _r(one_port.wall_s), "one_port_change_cpu_s": _r(one_port.cpu_s),
            "reference_append_wall_s": _r(reference.wall_s), "reference_append_cpu_s": _r(reference.cpu_s),
            "first_reference_ratio": _r(_ratio(first.wall_s, reference.wall_s), 3),
        }

    def _reference_append(self, ports: tuple[PortFirewall, ...], members: dict[str, frozenset[str]]) -> Span:
        """The ports' rules, as the firewall writes them, appended to one plain chain of a scratch
        namespace and committed at once (the remote groups' sets made first, untimed)."""
        from backend.network.firewall import _allow  # the firewall's own rule builder: the same rules

        scratch = self._namespace("ref")

        def sets() -> None:
            with IPSet() as ipset:
                _create_sets(ipset, members)

        run_in(scratch, sets)

        def append() -> Span:
            with fresh_tables(["filter"]) as tables:
                table = tables["filter"]
                with measured() as span:
                    table.create_chain("bench-ref")
                    chain = iptc.Chain(table, "bench-ref")
                    for port in ports:
                        for rule in port.rules:
                            chain.append_rule(_allow(rule, egress=rule.direction == "egress"))
                    table.commit()
            return span

        return run_in(scratch, append)

    # --- 2. group --------------------------------------------------------------------------------

    def group(self) -> dict[str, Any]:
        cfg = self.cfg
        hosts = [self._host() for _ in range(cfg.hosts)]
        net = self._network("10.40.0.0/16")
        group = str(uuid.uuid4())
        others = [str(uuid.uuid4()) for _ in range(3)]
        server = net.port(hosts[0].hv)
        vms = {server.id: self.lab.instance(hosts[0].hv, server.id, server.mac)}
        host_ports = [server] + [net.port(h.hv) for h in hosts[1:]]
        for port, host in zip(host_ports[1:], hosts[1:]):
            _veth(host.hv, port.tap, "g0", self._namespace(f"g{hosts.index(host)}"))
        newcomer_host = hosts[1] if len(hosts) > 1 else hosts[0]
        newcomer = net.port(newcomer_host.hv)
        vms[newcomer.id] = self.lab.instance(newcomer_host.hv, newcomer.id, newcomer.mac)
        for host in hosts:
            host.sync(net)
        _address(vms[server.id].netns, server.ip)
        _address(vms[newcomer.id].netns, newcomer.ip)
        listener = run_in(vms[server.id].netns, lambda: socket.create_server(("0.0.0.0", PROBE_PORT)))
        self.sockets.append(listener)

        rules = (Rule("ingress", TCP, PROBE_PORT, PROBE_PORT, remote_group=group),
                 Rule("ingress", UDP, 5000, 5100, remote_group=group),
                 Rule("ingress", ICMP, icmp_type=8, remote_group=group),
                 Rule("ingress", TCP, 443, 443, remote_group=others[0]),
                 Rule("ingress", TCP, 22, 22, remote_cidr="10.0.0.0/8"),
                 Rule("egress"))
        old = frozenset(f"10.41.{m // 250}.{m % 250 + 1}" for m in range(cfg.members))
        fixed = {g: frozenset({f"10.42.0.{k + 1}"}) for k, g in enumerate(others)}

        def state(host: Host, members: frozenset[str]) -> FirewallState:
            port = host_ports[hosts.index(host)]
            own: list[PortFirewall] = [_fw_port(port, rules)]
            if host is newcomer_host:
                own.append(_fw_port(newcomer, (Rule("egress"),)))
            return FirewallState(tuple(own), {group: members, **fixed}, {net.bridge: 1})

        for host in hosts:
            host.firewall.apply(state(host, old))
        refused_before = self._connect(vms[newcomer.id].netns, server.ip, 0.5) is None

        new = old | {newcomer.ip}
        spans: list[Span] = []
        connect_s: float | None = None
        started = time.perf_counter()
        for host in hosts:
            with measured() as span:
                host.firewall.apply(state(host, new))
            spans.append(span)
            if host is hosts[0]:
                applied = time.perf_counter()
                connect_s = self._until_connected(vms[newcomer.id].netns, server.ip)
                if connect_s is not None:
                    connect_s += applied - started
        sequential = sum(s.wall_s for s in spans)

        references: list[float] = []
        for host in hosts:
            references.append(_bare_ipset_add(host.hv.netns, newcomer.ip))
        walls = [s.wall_s for s in spans]
        cpus = [s.cpu_s for s in spans]
        return {
            "hosts": cfg.hosts, "members_before": cfg.members, "refused_before": refused_before,
            "per_host_wall_s": [_r(w) for w in walls], "per_host_cpu_s": [_r(c) for c in cpus],
            "apply_p50_s": _r(_median(walls)), "apply_max_s": _r(max(walls)),
            "apply_cpu_p50_s": _r(_median(cpus)), "sequential_wall_s": _r(sequential),
            "connect_after_change_s": _r(connect_s), "let_in": connect_s is not None,
            "reference_ipset_add_p50_s": _r(_median(references)),
        }

    @staticmethod
    def _connect(namespace: str, address: str, timeout: float) -> bool | None:
        def attempt() -> bool | None:
            with socket.socket() as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect((address, PROBE_PORT))
                except OSError:
                    return None
                return True
        return run_in(namespace, attempt)

    def _until_connected(self, namespace: str, address: str) -> float | None:
        """Seconds from now until a TCP connect from ``namespace`` succeeds (a new flow each try)."""
        started = time.perf_counter()
        while time.perf_counter() - started < PROBE_DEADLINE_S:
            if self._connect(namespace, address, PROBE_TIMEOUT_S):
                return time.perf_counter() - started
        return None

    # --- 3. throughput ---------------------------------------------------------------------------

    def throughput(self) -> dict[str, Any]:
        cfg = self.cfg
        host = self._host()
        net = self._network("10.30.0.0/24")
        server, client = net.port(host.hv), net.port(host.hv)
        vms = {p.id: self.lab.instance(host.hv, p.id, p.mac) for p in (server, client)}
        host.sync(net)
        for port in (server, client):
            _address(vms[port.id].netns, port.ip)
        proc = subprocess.Popen([*netns_argv(vms[server.id].netns), "iperf3", "-s", "-p", str(IPERF_PORT)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        # 99 rules that do not match the client's flow (other ports, other sources), then the one that does
        decoys = [Rule("ingress", TCP, 6000 + k, 6000 + k, remote_cidr=f"10.{k % 250}.0.0/16")
                  if k % 2 else Rule("ingress", TCP, IPERF_PORT, IPERF_PORT, remote_cidr=f"192.0.2.{k}/32")
                  for k in range(cfg.throughput_rules - 1)]
        rules = (*decoys, Rule("ingress", TCP, IPERF_PORT, IPERF_PORT, remote_cidr=f"{client.ip}/32"))
        firewalled = FirewallState((_fw_port(server, rules), _fw_port(client, (Rule("egress"),))), {},
                                   {net.bridge: 1})
        samples: dict[str, list[dict[str, Any]]] = {"rules": [], "none": []}
        for _ in range(cfg.rounds):
            for variant in ("rules", "none"):
                host.firewall.apply(firewalled if variant == "rules" else FirewallState())
                samples[variant].append(self._iperf(vms[client.id].netns, server.ip))
        out: dict[str, Any] = {"rule_count": len(rules), "seconds": cfg.seconds, "rounds": cfg.rounds}
        for variant, results in samples.items():
            out[variant] = {"gbps": _r(_median([r["gbps"] for r in results])),
                            "cpu_s_per_gb": _r(_median([r["cpu_s_per_gb"] for r in results
                                                        if r["cpu_s_per_gb"] is not None])),
                            "samples_gbps": [_r(r["gbps"], 3) for r in results]}
        out["rules_gbps"], out["none_gbps"] = out["rules"]["gbps"], out["none"]["gbps"]
        out["rules_none_ratio"] = _r(_ratio(out["rules_gbps"], out["none_gbps"]), 3)
        out["target_ratio"] = TARGET_RATIO
        out["target_met"] = out["rules_none_ratio"] is not None and out["rules_none_ratio"] >= TARGET_RATIO
        return out

    def _iperf(self, namespace: str, target: str) -> dict[str, Any]:
        argv = [*netns_argv(namespace), "iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(self.cfg.seconds),
                "-J"]
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
        received, sent, cpu = end["sum_received"], end["sum_sent"], end["cpu_utilization_percent"]
        seconds = float(sent["seconds"])
        gigabytes = float(received["bytes"]) / 1e9
        cpu_s = (float(cpu["host_total"]) + float(cpu["remote_total"])) / 100 * seconds
        return {"gbps": float(received["bits_per_second"]) / 1e9,
                "cpu_s_per_gb": cpu_s / gigabytes if gigabytes else None}


def _count_rules(namespace: str) -> int:
    def count() -> int:
        with fresh_tables(["filter"]) as tables:
            return sum(len(chain.rules) for chain in tables["filter"].chains)
    return run_in(namespace, count)


def _bare_ipset_add(namespace: str, address: str) -> float:
    """Seconds of one bare ipset add (a scratch set, made and destroyed untimed)."""
    def add() -> float:
        with IPSet() as ipset:
            ipset.create("bench-ref", stype="hash:ip", family=socket.AF_INET)
            try:
                started = time.perf_counter()
                ipset.add("bench-ref", address, etype="ip")
                return time.perf_counter() - started
            finally:
                ipset.destroy("bench-ref")
    return run_in(namespace, add)


# Output -----------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}{unit}"
    return f"{value}{unit}"


def format_table(out: dict[str, Any]) -> str:
    lines: list[str] = []
    a = out.get("apply") or {}
    if a:
        lines.append(f"apply: {a.get('rules')} rules over {a.get('ports')} ports "
                     f"({a.get('kernel_rules_filter')} rules in the filter table)")
        if "error" in a:
            lines.append(f"  error: {a['error']}")
        lines.append(f"  {'':<34}{'wall':>10}{'cpu':>10}")
        for key, label in (("first", "first apply"), ("reapply", "re-apply, same state"),
                           ("restarted_reapply", "re-apply, restarted backend"),
                           ("one_port_change", "one port's rules changed"),
                           ("reference_append", "reference: plain chain, one commit")):
            span = a.get(key) or {}
            lines.append(f"  {label:<34}{_fmt(span.get('wall_s'), ' s'):>10}{_fmt(span.get('cpu_s'), ' s'):>10}")
    g = out.get("group") or {}
    if g:
        lines.append(f"\ngroup: a member joins G on {g.get('hosts')} hosts")
        if "error" in g:
            lines.append(f"  error: {g['error']}")
        lines.append(f"  apply per host p50 / max: {_fmt(g.get('apply_p50_s'), ' s')} / {_fmt(g.get('apply_max_s'), ' s')}"
                     f" (cpu p50 {_fmt(g.get('apply_cpu_p50_s'), ' s')}); all hosts one after the other "
                     f"{_fmt(g.get('sequential_wall_s'), ' s')}")
        lines.append(f"  refused before: {_fmt(g.get('refused_before'))}; connect from the new member after the "
                     f"change began: {_fmt(g.get('connect_after_change_s'), ' s')}")
        lines.append(f"  reference: bare ipset add p50 {_fmt(g.get('reference_ipset_add_p50_s'), ' s')}")
    t = out.get("throughput") or {}
    if t:
        lines.append(f"\nthroughput: iperf3 {t.get('seconds')} s x {t.get('rounds')} rounds, one hypervisor")
        if "error" in t:
            lines.append(f"  error: {t['error']}")
        for variant, label in (("rules", f"{t.get('rule_count')} rules"), ("none", "no firewall")):
            data = t.get(variant) or {}
            lines.append(f"  {label:<14}{_fmt(data.get('gbps'), ' Gbit/s'):>16}"
                         f"{_fmt(data.get('cpu_s_per_gb'), ' CPU s/GB'):>18}")
        lines.append(f"  rules_none_ratio {_fmt(t.get('rules_none_ratio'))} (target >= {TARGET_RATIO})")
    lines.append(f"\nrun: {_fmt(out.get('wall_s'), ' s')}")
    return "\n".join(lines)


UNITS = {
    "apply_*_wall_s": "s", "apply_*_cpu_s": "CPU s (process + reaped children)",
    "apply_first_reference_ratio": "first apply wall / reference wall",
    "group_apply_p50_s": "s per host", "group_apply_max_s": "s", "group_connect_after_change_s": "s",
    "group_reference_ipset_add_p50_s": "s", "rules_gbps": "Gbit/s", "none_gbps": "Gbit/s",
    "rules_none_ratio": "throughput with the rules / without a firewall (medians)",
}


def _figures(out: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, flat at the top of the JSON."""
    flat: dict[str, Any] = {}
    for section, keys in (("apply", ("first_wall_s", "first_cpu_s", "reapply_wall_s", "reapply_cpu_s",
                                     "restarted_reapply_wall_s", "restarted_reapply_cpu_s", "one_port_change_wall_s",
                                     "one_port_change_cpu_s", "reference_append_wall_s", "reference_append_cpu_s",
                                     "first_reference_ratio")),
                          ("group", ("apply_p50_s", "apply_max_s", "apply_cpu_p50_s", "connect_after_change_s",
                                     "refused_before", "reference_ipset_add_p50_s")),
                          ("throughput", ("rules_gbps", "none_gbps", "rules_none_ratio"))):
        data = out.get(section) or {}
        for key in keys:
            flat[key if section == "throughput" else f"{section}_{key}"] = data.get(key)
    return flat


def _commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


#: this run's process: pyroute2 forks short-lived children, which inherit the signal handlers
#: and must never run the benchmark's code on from a signal
_MAIN_PID = os.getpid()


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    if os.getpid() != _MAIN_PID:
        os._exit(1)
    raise KeyboardInterrupt()


def _announce_cleanup(_signum: int, _frame: FrameType | None) -> None:
    if os.getpid() != _MAIN_PID:
        os._exit(1)
    print("removing this run's namespaces and processes; a moment", file=sys.stderr)


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Where to write the results [default: bench/results/sg-<timestamp>.json].")
@click.option("--quick", is_flag=True, help="A smoke run: every section, small.")
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="Sections, comma-separated.")
def main(json_path: str | None, quick: bool, sections: str) -> None:
    """Security groups' firewall on namespace hypervisors (see the module's docstring)."""
    names = tuple(n.strip() for n in sections.split(",") if n.strip())
    if any(n not in SECTIONS for n in names):
        raise click.BadParameter(f"{sections!r}: a comma-separated list of {', '.join(SECTIONS)}")
    cfg = dataclasses.replace(QUICK if quick else Config(), sections=names)
    if os.geteuid() != 0:
        raise click.ClickException("needs root: network namespaces, iptables")
    if "throughput" in cfg.sections and shutil.which("iperf3") is None:
        raise click.ClickException("iperf3 is missing (sh scripts/ensure-test-tools.sh installs it)")
    setup_logging("warning", service="bench-sg")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="cloudland-bench-sg-"))
    bench = SgBench(cfg, workdir)
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": platform.release(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "commit": _commit(), "python": platform.python_version(),
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
    path = Path(json_path) if json_path else RESULTS_DIR / f"sg-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(format_table(out))
    click.echo(f"\nwritten to {path}")
    sys.exit(status)


if __name__ == "__main__":
    main()
