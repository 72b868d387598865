"""``net.sync`` answered from memory, for the frontend's own tests of what it pushes to hosts.

What a hypervisor does with a network is the network driver's business, tested on real kernels
(``tests/network``).  This stand-in checks each body exactly as a host does (the schema, then
``desired_state`` for its own VTEP), and keeps what the host would now carry: per network,
its own ports (with their security groups), the remote (MAC, VTEP) pairs and its floating
IPs, and the newest description of each security group it heard of (its rules, and its members
when sent), applying bodies in the order of their revisions as the driver does.
"""

from __future__ import annotations

import threading
from typing import Any

from backend.network.exceptions import NetworkError
from backend.network.spec import ARGS, desired_state
from backend.registry import Op, OpError, OpRegistry

__all__ = ["RecordingNetwork"]


class RecordingNetwork:
    def __init__(self, host: str, vtep: str) -> None:
        self.host = host
        self.vtep = vtep
        #: network id -> what the host carries of it
        self.networks: dict[str, dict[str, Any]] = {}
        #: every body received, in order
        self.bodies: list[dict[str, Any]] = []
        #: a message: net.sync fails on this host with it
        self.fail: str | None = None
        self._revisions: dict[str, int] = {}
        #: group id -> (revision, number of rules, members or None)
        self.groups: dict[str, tuple[int, int, list[str] | None]] = {}
        self._lock = threading.Lock()

    def register(self, registry: OpRegistry) -> None:
        registry.register(Op("net.sync", self.sync, ARGS["net.sync"], durable=True, idempotent=True))

    def sync(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.bodies.append(args)
            if self.fail is not None:
                raise OpError(self.fail, 1)
            try:
                state = desired_state(args, self.vtep)
            except NetworkError as exc:
                raise OpError(str(exc), exc.exit_status) from exc
            scope = state.scope if state.scope is not None else set(self.networks) | {n.id for n in state.networks}
            wanted = {n.id: n for n in state.networks if n.ports}
            for network_id in scope:
                if self._revisions.get(network_id, 0) > state.revision:
                    continue
                self._revisions[network_id] = state.revision
                network = wanted.get(network_id)
                if network is None:
                    self.networks.pop(network_id, None)
                    continue
                self.networks[network_id] = {
                    "router": network.router, "snat": network.snat,
                    "ports": sorted(p.ip for p in network.ports),
                    "port_groups": {p.ip: sorted(p.security_groups or ()) for p in network.ports},
                    "remote": sorted((p.mac, p.vtep) for p in network.remote_ports),
                    "floating": sorted((f.address, f.port_id) for f in network.floating_ips),
                    "vnis": sorted(s.vni for s in network.subnets)}
            for group in state.groups.values():
                known = self.groups.get(group.id)
                if known is None or known[0] <= state.revision:
                    members = sorted(group.members) if group.members is not None else (known[2] if known else None)
                    self.groups[group.id] = (state.revision, len(group.rules), members)
            return {"networks": sorted(self.networks)}
