"""Namespace hypervisors for network tests: real kernels, nothing mocked, everything torn down.

``Underlay`` makes, under one random token, a namespace holding the underlay bridge, and
hypervisors: namespaces joined to that bridge by a veth (``ul0``, 192.0.2.N/24: TEST-NET, only
ever inside these namespaces).  It also makes an external network: an "outside" namespace
(203.0.113.1/24, TEST-NET-3) on a second bridge, to which each hypervisor is joined by its
external bridge ``brex`` (203.0.113.1N/24, its default route via the outside).  ``instance()`` makes an instance the way a tap would be: a
namespace whose ``eth0`` (with the port's MAC) is the peer of the port's tap name in the
hypervisor.  Everything is recorded as it is made and removed in reverse on exit, failed test
or not, and every process still running in one of its namespaces is killed first (the
drivers' dnsmasqs included).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pyroute2 import NetNS, netns

from backend.network.namespaces import run_in as in_namespace
from backend.ports import tap_name

__all__ = ["Hypervisor", "Instance", "Underlay", "connect", "run_in", "serve"]

UNDERLAY_NET = "192.0.2"
EXTERNAL_NET = "203.0.113"
EXTERNAL_BRIDGE = "brex"

#: what busybox udhcpc runs with a lease: apply it, then say what it got on stdout
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
busybox ip addr flush dev "$interface"
busybox ip addr add "$ip/$mask" dev "$interface"
[ -n "$mtu" ] && busybox ip link set dev "$interface" mtu "$mtu"
[ -n "$router" ] && busybox ip route replace default via "$router" dev "$interface"
echo "LEASE ip=$ip mask=$mask router=$router mtu=$mtu"
"""


@dataclass(frozen=True)
class Hypervisor:
    name: str
    netns: str
    vtep: str
    #: its own address on the external network (what SNATed egress leaves with)
    external_address: str


@dataclass(frozen=True)
class Instance:
    netns: str
    mac: str
    tap: str


def run_in(namespace: str, *argv: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{namespace}", "--", *argv], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {namespace} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


class Underlay:
    def __init__(self, workdir: Path) -> None:
        self.token = "t" + secrets.token_hex(3)
        self.workdir = workdir
        self.namespace = f"{self.token}-ul"
        self.outside = f"{self.token}-out"
        self.external_net = {"cidr": f"{EXTERNAL_NET}.0/24", "gateway": f"{EXTERNAL_NET}.1"}
        self._namespaces: list[str] = []
        self.hypervisors: list[Hypervisor] = []
        self._script = workdir / "udhcpc.sh"

    def __enter__(self) -> "Underlay":
        try:
            self._make_namespace(self.namespace)
            with NetNS(self.namespace) as ul:
                for bridge in ("ulbr", "exbr"):
                    ul.link("add", ifname=bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
                    ul.link("set", index=ul.link_lookup(ifname=bridge)[0], state="up")
            self._make_namespace(self.outside)
            self._join(self.outside, "xo", "eth0", "exbr", f"{EXTERNAL_NET}.1")
            self._script.write_text(UDHCPC_SCRIPT)
            self._script.chmod(0o755)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def prefix(self) -> str:
        """What every namespace of this underlay starts with: give it to drivers as their namespace prefix."""
        return f"{self.token}-"

    def _make_namespace(self, name: str) -> None:
        netns.create(name)
        self._namespaces.append(name)
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    def _join(self, namespace: str, port: str, device: str, bridge: str, address: str | None) -> None:
        """A veth from ``bridge`` in the underlay namespace to ``device`` in ``namespace``."""
        with NetNS(self.namespace) as ul:
            ul.link("add", ifname=port, kind="veth", peer={"ifname": device, "net_ns_fd": namespace})
            ul.link("set", index=ul.link_lookup(ifname=port)[0], master=ul.link_lookup(ifname=bridge)[0], state="up")
        with NetNS(namespace) as ns:
            index = ns.link_lookup(ifname=device)[0]
            if address is not None:
                ns.addr("add", index=index, address=address, prefixlen=24)
            ns.link("set", index=index, state="up")

    def hypervisor(self) -> Hypervisor:
        index = len(self.hypervisors) + 1
        name = f"{self.token}-hv{index}"
        vtep = f"{UNDERLAY_NET}.{index}"
        external = f"{EXTERNAL_NET}.{10 + index}"
        self._make_namespace(name)
        self._join(name, f"u{index}", "ul0", "ulbr", vtep)
        self._join(name, f"x{index}", "ex0", "exbr", None)
        with NetNS(name) as hv:
            hv.link("add", ifname=EXTERNAL_BRIDGE, kind="bridge", br_stp_state=0, br_forward_delay=0)
            brex = hv.link_lookup(ifname=EXTERNAL_BRIDGE)[0]
            hv.link("set", index=hv.link_lookup(ifname="ex0")[0], master=brex)
            hv.addr("add", index=brex, address=external, prefixlen=24)
            hv.link("set", index=brex, state="up")
            hv.route("add", dst="default", gateway=f"{EXTERNAL_NET}.1")
        hypervisor = Hypervisor(name, name, vtep, external)
        self.hypervisors.append(hypervisor)
        return hypervisor

    def instance(self, hypervisor: Hypervisor, port_id: str, mac: str) -> Instance:
        """An instance of ``port_id`` on ``hypervisor``: its tap waits there for the driver to plug it."""
        name = f"{self.token}-vm{len(self._namespaces)}"
        self._make_namespace(name)
        tap = tap_name(port_id)
        with NetNS(hypervisor.netns) as hv:
            hv.link("add", ifname=tap, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name, "address": mac})
            hv.link("set", index=hv.link_lookup(ifname=tap)[0], state="up")
        with NetNS(name) as vm:
            vm.link("set", index=vm.link_lookup(ifname="eth0")[0], state="up")
        return Instance(name, mac, tap)

    def dhcp(self, instance: Instance, timeout: float = 60.0) -> dict[str, str]:
        """Ask for a lease on the instance's eth0 as a guest would (busybox udhcpc); what it got.
        Patient (30 tries a second apart): a loaded machine may start a dnsmasq late."""
        proc = run_in(instance.netns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "30", "-T", "1",
                      "-O", "mtu", "-s", str(self._script), timeout=timeout, check=False)
        for line in proc.stdout.splitlines():
            if line.startswith("LEASE "):
                return dict(item.split("=", 1) for item in line.split()[1:])
        raise AssertionError(f"no lease in {instance.netns}: {proc.stdout}{proc.stderr}")

    def close(self) -> None:
        # Every namespace of the token, the drivers' router namespaces too.
        ours = [n for n in netns.listnetns() if n.startswith(self.prefix)]
        for name in ours:
            _kill_processes_in(name)
        for name in sorted(ours, key=lambda n: n == self.namespace):
            with contextlib.suppress(OSError):
                netns.remove(name)


def _kill_processes_in(name: str) -> None:
    with contextlib.suppress(OSError):
        inode = os.stat(f"/run/netns/{name}").st_ino
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/net").st_ino == inode and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def serve(namespace: str, port: int, reply: bytes) -> tuple[socket.socket, list[str]]:
    """A TCP server in ``namespace`` on ``port``: it answers every connection with ``reply`` and
    notes its peer's address.  Close the socket to stop it."""
    server = in_namespace(namespace, lambda: socket.create_server(("0.0.0.0", port)))
    peers: list[str] = []

    def loop() -> None:
        while True:
            try:
                conn, (peer, _) = server.accept()
            except OSError:
                return
            peers.append(peer)
            with conn:
                conn.sendall(reply)

    threading.Thread(target=loop, daemon=True).start()
    return server, peers


def connect(namespace: str, address: str, port: int, timeout: float = 2.0) -> bytes | None:
    """What a TCP connection from ``namespace`` to ``address``:``port`` reads; None if it cannot connect."""
    def attempt() -> bytes | None:
        try:
            with socket.create_connection((address, port), timeout=timeout) as conn:
                return conn.recv(64)
        except OSError:
            return None
    return in_namespace(namespace, attempt)
