"""Namespace hypervisors for network tests: real kernels, nothing mocked, everything torn down.

``Underlay`` is a lab of ``localcluster/netlab.py`` without a management link: these tests
drive their drivers in-process, so nothing of the lab's underlay touches this machine's own
namespace.  ``serve`` and ``connect`` put TCP endpoints into the lab's namespaces.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from pyroute2 import NetNS, netns

from backend.network import names
from backend.network.namespaces import run_in as in_namespace
from localcluster.netlab import EXTERNAL_BRIDGE, Hypervisor, Instance, NetLab, run_in

__all__ = ["EXTERNAL_BRIDGE", "Hypervisor", "Instance", "Underlay", "connect", "links", "run_in", "serve",
           "tenant_leftovers"]


class Underlay(NetLab):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, management=False)


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


def links(namespace: str) -> dict[str, int]:
    """The links of ``namespace``, by name: their indexes."""
    with NetNS(namespace) as ns:
        return {str(m.get("IFLA_IFNAME")): int(m["index"]) for m in ns.get_links()}


def _processes_in(namespace: str) -> list[int]:
    inode = os.stat(f"/run/netns/{namespace}").st_ino
    pids = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def tenant_leftovers(namespace: str, backend_pid: int) -> list[str]:
    """What the network driver built on a hypervisor and should have removed with the last port."""
    left = [f"link {n}" for n in links(namespace)
            if names.OWNED.match(n) or names.OWNED_PER_NETWORK.match(n) or n.startswith("tap")]
    with NetNS(namespace) as ns:
        left += [f"fdb {m.get('NDA_LLADDR')} on {m['ifindex']}" for m in ns.fdb("dump")
                 if m.get("NDA_DST") is not None]
    left += [f"namespace {n}" for n in netns.listnetns() if n.startswith(f"{namespace}-router-")]
    left += [f"process {pid}" for pid in _processes_in(namespace) if pid != backend_pid]
    return left
