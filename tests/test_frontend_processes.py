"""The frontend as a real process over a real tree: kill -9 it in the middle of tasks.

Backends answer the compute ops from ``tests/support/compute_ops.py`` and log every op they
run, so "no task ran twice" is checked on the hosts, not in the frontend's own account.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from localcluster import LocalCluster
from tests.support.cloudapi import admin_client, clctl, clctl_login, running, until
from tests.support.qcow2 import fake_qcow2

pytestmark = pytest.mark.slow

TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0}
QCOW2 = fake_qcow2()
LAUNCH_SECONDS = 3.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", agents=1, backends=4, tree=TREE, ops_modules=["tests.support.compute_ops"],
                     env={"CLOUDLAND_TEST_COMPUTE_LOG": str(tmp_path / "ops.log"),
                          "CLOUDLAND_TEST_CREATE_DELAY": str(LAUNCH_SECONDS)})
    with running(c):
        yield c


def test_frontend_killed_mid_launch_finishes_every_task_once(cluster: LocalCluster, tmp_path: Path) -> None:
    api = admin_client(cluster)
    until(lambda: len([h for h in api.get("/v1/hypervisors").json()["items"]
                        if h["status"] == "up" and h["facts"]]) == 4, 30, "4 hypervisors with capacity")
    api.post("/v1/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}).raise_for_status()
    image = api.post("/v1/images", json={"name": "tiny", "format": "qcow2"}).json()
    api.put(f"/v1/images/{image['id']}/file", content=QCOW2).raise_for_status()
    tasks = []
    for i in range(4):
        accepted = api.post("/v1/instances", json={"name": f"vm{i}", "flavor": "small", "image": "tiny"})
        assert accepted.status_code == 202, accepted.text
        tasks.append(accepted.json()["task"]["id"])

    def launches_sent() -> bool:
        steps = [api.get(f"/v1/tasks/{t}").json()["steps"] for t in tasks]
        return all(any(s["op"] == "instance.create" for s in st) for st in steps)

    until(launches_sent, 30, "every launch to be sent")
    cluster.kill("frontend")  # kill -9, while the hosts are still building
    cluster.start_frontend()
    api = admin_client(cluster)  # a new connection; the old token is still valid
    def ended() -> list[dict[str, Any]] | None:
        states = [api.get(f"/v1/tasks/{t}").json() for t in tasks]
        return states if all(t["status"] in ("succeeded", "failed") for t in states) else None

    final = until(ended, 60, "every task to end")
    assert [t["status"] for t in final] == ["succeeded"] * 4, [t["error"] for t in final]
    instances = api.get("/v1/instances").json()["items"]
    assert sorted(i["status"] for i in instances) == ["active"] * 4
    ops = [json.loads(line) for line in (tmp_path / "ops.log").read_text().splitlines()]
    creates = [o["id"] for o in ops if o["op"] == "instance.create"]
    assert sorted(creates) == sorted(i["id"] for i in instances), "each instance must be built exactly once"
    assert "task_command_resent" in cluster.log_text("frontend")


def test_clctl_drives_a_running_cloud(cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    clctl_login(home, cluster)
    tree = json.loads(clctl(home, "--json", "tree").stdout)
    assert sorted(n["node_id"] for n in tree["nodes"] if n["role"] == "backend") == cluster.backend_names
    ping = clctl(home, "ping")
    assert ping.returncode == 0 and all(name in ping.stdout for name in cluster.backend_names), ping.stdout

    def listing() -> dict[str, str]:
        hosts = json.loads(clctl(home, "--json", "hypervisor", "list").stdout)["items"]
        return {h["name"]: h["status"] for h in hosts}

    until(lambda: listing() == {name: "up" for name in cluster.backend_names}, 30, "every hypervisor up")
    # The hypervisor view and the tree view agree: the same hosts, each alive in both, heartbeats
    # fresh (two queries a moment apart: a host may turn suspect in one of them on a busy machine).
    hosts = {h["name"]: h for h in json.loads(clctl(home, "--json", "hypervisor", "list").stdout)["items"]}
    nodes = {n["node_id"]: n for n in json.loads(clctl(home, "--json", "tree").stdout)["nodes"]
             if n["role"] == "backend"}
    assert set(hosts) == set(nodes)
    alive = {"up", "suspect"}
    assert all({hosts[name]["tree_state"], nodes[name]["state"]} <= alive for name in nodes), (hosts, nodes)
    assert all(0 <= hosts[name]["heartbeat_age_s"] < 3 and 0 <= nodes[name]["heartbeat_age"] < 3 for name in nodes)
    victim = cluster.backend_names[0]
    cluster.kill(victim)

    until(lambda: listing()[victim] == "down", 30, f"{victim} to be marked down")
    # The view reads a tree report up to a second old (hosts.TREE_VIEW_MAX_AGE_S): it may lag the table.
    until(lambda: json.loads(clctl(home, "--json", "hypervisor", "show", victim).stdout)["tree_state"] == "down",
          10, f"the tree view to show {victim} down")
    ping = clctl(home, "ping", victim, "--timeout", "2")
    assert ping.returncode == 1, (ping.stdout, ping.stderr)
    events = json.loads(clctl(home, "--json", "event", "list", "--host", victim).stdout)["items"]
    assert "host.down" in [e["kind"] for e in events]
    assert clctl(home, "logout").returncode == 0
    assert clctl(home, "tree").returncode == 3  # not logged in any more
