"""The soak's simulated hypervisors: in-memory compute and network drivers whose guests outlive the process.

A real hypervisor's guests and taps live in libvirt and the kernel, not in the backend: a backend
killed and started again finds them where they were.  These stand-ins (the frontend tests'
``RecordingCompute`` and ``RecordingNetwork``, which answer as the real drivers answer) keep what
each host carries in memory, and write each change to a per-process file before the op answers;
a restarted process reads it back, so a kill -9 of the process is the crash of the backends, not
of the hypervisors.  Each host also has the backend's journal and root-epoch file on disk, as
``backend.daemon`` has, so commands resent after a restart are answered from the journal.

``instance.create`` and ``instance.delete`` runs are appended to the ops log (host, op, instance
id) by ``RecordingCompute`` itself; that log is what the hosts' instances are rebuilt from, and
what the bench counts duplicated runs in.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import zmq

import sci
from backend.ops import system
from backend.registry import OpRegistry
from sci.reactor import Reactor
from service.epochs import EpochFile
from service.logs import setup_logging
from tests.support.compute_ops import RecordingCompute
from tests.support.network_ops import RecordingNetwork

from .procs import prepare_child
from .simhosts import serve

__all__ = ["host_name", "read_views", "run_soak_sim", "vtep_of"]

#: Op-registry threads per host: a host runs its commands one at a time, as the bench's load needs no more.
WORKERS_PER_HOST = 1


def host_name(index: int) -> str:
    return f"hv{index:05d}"


def vtep_of(index: int) -> str:
    """A distinct underlay address per host (10.128.0.0/9 holds 8 million)."""
    return f"10.{128 + (index >> 16)}.{(index >> 8) & 255}.{index & 255}"


class DurableNetwork(RecordingNetwork):
    """``RecordingNetwork`` whose view (each network's own ports and their groups) is written to
    ``log_path`` after each sync, and read back on start."""

    def __init__(self, host: str, vtep: str, log_path: Path, restored: dict[str, Any] | None) -> None:
        super().__init__(host, vtep)
        self.log_path = log_path
        if restored is not None:
            self.networks = restored["networks"]
            self._revisions = dict(restored["revisions"])

    def sync(self, args: dict[str, Any]) -> dict[str, Any]:
        answer = super().sync(args)
        # The stand-in keeps every body for the frontend's tests; thousands of launches would pile them up.
        self.bodies.clear()
        line = json.dumps({"host": self.host, "networks": _own_view(self.networks), "revisions": self._revisions})
        with self._lock, open(self.log_path, "a") as f:
            f.write(line + "\n")
        return answer


def _own_view(networks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a host carries of each network that the soak compares: its own ports and their groups
    (the remote list is the whole network's, and would make each line as big as the network)."""
    return {net: {"ports": view["ports"], "port_groups": view["port_groups"]} for net, view in networks.items()}


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line torn by the kill: its op never answered, so it never happened
            continue
    return out


def _restore_instances(ops_log: Path) -> dict[str, dict[str, str]]:
    """host -> instance id -> power state, replayed from the ops log."""
    hosts: dict[str, dict[str, str]] = {}
    for entry in _read_lines(ops_log):
        instances = hosts.setdefault(entry["host"], {})
        if entry["op"] == "instance.create":
            instances[entry["id"]] = "running"
        elif entry["op"] == "instance.delete":
            instances.pop(entry["id"], None)
    return hosts


def _restore_networks(net_log: Path) -> dict[str, dict[str, Any]]:
    """host -> its last written network view."""
    return {entry["host"]: entry for entry in _read_lines(net_log)}


def read_views(state_dir: Path) -> dict[str, dict[str, Any]]:
    """What every host of ``state_dir``'s processes carries: {host: {"instances": [...], "networks": {...}}}."""
    views: dict[str, dict[str, Any]] = {}
    for ops_log in sorted(state_dir.glob("*.ops.log")):
        for host, instances in _restore_instances(ops_log).items():
            views.setdefault(host, {"instances": [], "networks": {}})["instances"] = sorted(instances)
    for net_log in sorted(state_dir.glob("*.net.log")):
        for host, entry in _restore_networks(net_log).items():
            views.setdefault(host, {"instances": [], "networks": {}})["networks"] = entry["networks"]
    return views


def run_soak_sim(group: str, hosts: list[int], registrars: list[str], settings: sci.TreeSettings, log_path: str,
                 report_path: str, state_dir: str, window: int) -> None:
    """Simulate hypervisors ``hosts`` (indexes) until SIGTERM, resuming what ``state_dir`` holds of them."""
    prepare_child()
    setup_logging("warning", service="sim", stream=open(log_path, "a", buffering=1))  # noqa: SIM115
    state = Path(state_dir)
    ops_log, net_log = state / f"{group}.ops.log", state / f"{group}.net.log"
    instances = _restore_instances(ops_log)
    networks = _restore_networks(net_log)
    ctx = zmq.Context()
    # Per leaf: its DEALER, the monitor PAIR libzmq makes for it, and our end of the monitor.
    ctx.set(zmq.MAX_SOCKETS, 4 * len(hosts) + 64)
    reactor = Reactor()
    leaves, registries, journals = [], [], []
    for index in hosts:
        name = host_name(index)
        registry = OpRegistry(workers=WORKERS_PER_HOST)
        system.register(registry, vtep=vtep_of(index))
        compute = RecordingCompute(name, ops_log)
        compute.instances = instances.get(name, {})
        compute.register(registry)
        DurableNetwork(name, vtep_of(index), net_log, networks.get(name)).register(registry)
        # Not fsynced: the soak kills processes, not the machine, and the page cache outlives a process.
        journal = sci.Journal(state / "hosts" / name / "journal.log", fsync=False)
        leaf = sci.Leaf(name, registrars, settings, registry, journal, reactor=reactor, ctx=ctx)
        epochs = EpochFile(state / "hosts" / name / "root-epoch")
        leaf.keep_epoch(epochs.load(), epochs.save)
        registries.append(registry)
        journals.append(journal)
        leaves.append(leaf)
    try:
        # serve() counts runs of tagged commands; the soak counts from the ops log instead.
        serve(reactor, leaves, window, report_path, collections.Counter())
    finally:
        for registry in registries:
            registry.close()
        for journal in journals:
            journal.close()
        ctx.destroy(linger=0)
