"""A small cloud in one process for API tests that reach hypervisors: a real tree root, real
leaves on loopback answering compute ops from ``tests/support/compute_ops.py``, and the
frontend's host monitor run by hand so that a test decides when hosts are registered."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fastapi.testclient import TestClient

from backend.ops import system
from backend.registry import OpRegistry
from frontend.api.app import create_app
from frontend.bootstrap import bootstrap
from frontend.hosts import HostMonitor
from frontend.netconverge import HostNetworks
from frontend.netstate import NET_SYNC
from frontend.reconcile import Reconciler
from frontend.services import Frontend
from sci import Journal, Leaf, TreeRoot, TreeSettings
from tests.api.conftest import ADMIN_PASSWORD, Api, make_frontend
from tests.support.compute_ops import RecordingCompute
from tests.support.network_ops import RecordingNetwork

SETTINGS = TreeSettings(heartbeat_interval=0.2, reattach_grace=2.0)


@dataclass
class Cloud:
    root: TreeRoot
    frontend: Frontend
    client: TestClient
    admin: Api
    hosts: HostMonitor
    reconciler: Reconciler
    computes: dict[str, RecordingCompute] = field(default_factory=dict)
    #: the hosts' network stand-ins, when the cloud was made with networks
    networks: dict[str, RecordingNetwork] = field(default_factory=dict)
    leaves: dict[str, Leaf] = field(default_factory=dict)
    #: each host's zone and underlay address, to start it again with
    places: dict[str, tuple[str, str]] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)

    def add_host(self, name: str, zone: str = "", vtep: str = "") -> RecordingCompute:
        compute = RecordingCompute(name)
        self.computes[name] = compute
        if vtep:
            self.networks[name] = RecordingNetwork(name, vtep)
        self.places[name] = (zone, vtep)
        self._run_leaf(name, zone, vtep)
        return compute

    def _run_leaf(self, name: str, zone: str, vtep: str) -> None:
        registry = OpRegistry(4)
        system.register(registry, zone=zone, vtep=vtep)
        self.computes[name].register(registry)
        if vtep:
            self.networks[name].register(registry)
        leaf = Leaf(name, self.root.endpoint, SETTINGS, registry, Journal(None))
        thread = threading.Thread(target=leaf.run, daemon=True)
        thread.start()
        self.leaves[name] = leaf
        self.threads.append(thread)

    def away(self, name: str) -> None:
        """Stop the host's backend, and wait until the tree has lost it (its guests stay, as in libvirt)."""
        self.leaves[name].stop()
        end = time.monotonic() + 10
        while self.root.attached(name):
            assert time.monotonic() < end, f"{name} still attached"
            time.sleep(0.05)

    def back(self, name: str) -> None:
        """Start the host's backend again on what it holds, and wait until it is attached."""
        self._run_leaf(name, *self.places[name])
        end = time.monotonic() + 10
        while not self.root.attached(name):
            assert time.monotonic() < end, f"{name} not attached again"
            time.sleep(0.05)

    def sync_hosts(self) -> None:
        """Register every attached host and read its capacity, as the monitor does each round."""
        self.root.wait_for_hosts(len(self.leaves), timeout=10)
        self.hosts.run_once()

    def wait_task(self, api: Api, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            task = api.ok("get", f"/v1/tasks/{task_id}")
            if task["status"] in ("succeeded", "failed"):
                return dict(task)
            assert time.monotonic() < end, f"task {task_id} still {task['status']}"
            time.sleep(0.05)

    def stop(self) -> None:
        for leaf in self.leaves.values():
            leaf.stop()
        for thread in self.threads:
            thread.join(5)
        self.root.stop()


def make_cloud(db_url: str, data_dir: Path, hosts: int = 3, networks: bool = False,
               **scheduler: Any) -> Iterator[Cloud]:
    """``networks``: hosts also run (a stand-in of) the network driver, each with an underlay address."""
    root = TreeRoot("tcp://127.0.0.1:0", SETTINGS).start()
    frontend = make_frontend(db_url, data_dir, tree=root, **scheduler)
    bootstrap(frontend.db, frontend.data_dir, ADMIN_PASSWORD)
    client = TestClient(create_app(frontend))
    host_networks = HostNetworks(frontend.db, frontend.submit)
    frontend.tasks.on_missed(NET_SYNC, host_networks.owe)  # wired as the leader's duties wire it
    cloud = Cloud(root, frontend, client, Api(client).login("admin", ADMIN_PASSWORD),
                  HostMonitor(frontend.db, root, frontend.submit, host_networks, wake=frontend.tasks.wake),
                  Reconciler(frontend.db, frontend.submit, 3600))
    try:
        for i in range(hosts):
            cloud.add_host(f"hv{i}", vtep=f"192.0.2.{i + 1}" if networks else "")
        cloud.sync_hosts()
        yield cloud
    finally:
        frontend.tasks.wait_idle(10)
        frontend.tasks.stop()
        cloud.stop()
        client.close()
        frontend.db.dispose()
