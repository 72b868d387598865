"""Namespace hypervisors for network tests: real kernels, nothing mocked, everything torn down.

``Underlay`` is a lab of ``localcluster/netlab.py`` without a management link: these tests
drive their drivers in-process, so nothing of the lab's underlay touches this machine's own
namespace.  ``serve`` and ``connect`` put TCP endpoints into the lab's namespaces.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from backend.network.namespaces import run_in as in_namespace
from localcluster.netlab import EXTERNAL_BRIDGE, Hypervisor, Instance, NetLab, run_in

__all__ = ["EXTERNAL_BRIDGE", "Hypervisor", "Instance", "Underlay", "connect", "run_in", "serve"]


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
