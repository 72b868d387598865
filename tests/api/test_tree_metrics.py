"""One scrape of the frontend covers the tree: agents' and hosts' counters come up through it,
and a broadcast, a failed command, a killed agent and a host that goes and comes back move
the right series and leave events."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from frontend.api.app import create_app
from frontend.bootstrap import bootstrap
from frontend.hosts import HostMonitor
from sci import TreeSettings
from tests.api.conftest import ADMIN_PASSWORD, Api, make_frontend
from tests.support.trees import ThreadTree
from tests.support.waiting import until

SETTINGS = TreeSettings(heartbeat_interval=0.2, fanout=2, reattach_grace=2.0, counters_interval=0.2)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def small(db_url: str, tmp_path: Path) -> Iterator[tuple[ThreadTree, Api, HostMonitor]]:
    tree = ThreadTree(SETTINGS)
    frontend = make_frontend(db_url, tmp_path / "frontend", tree=tree.root)
    bootstrap(frontend.db, frontend.data_dir, ADMIN_PASSWORD)
    client = TestClient(create_app(frontend))
    try:
        tree.agent("a0")
        tree.agent("a1")
        tree.wait_agents(["a0", "a1"])
        for i in range(4):
            tree.host(f"hv{i}")
        tree.root.wait_for_hosts(4, timeout=10)
        monitor = HostMonitor(frontend.db, tree.root, frontend.submit, None, startup_grace=0)
        monitor.run_once()
        yield tree, Api(client).login("admin", ADMIN_PASSWORD), monitor
    finally:
        frontend.tasks.stop()
        tree.stop()
        client.close()
        frontend.db.dispose()


def scrape(api: Api) -> Samples:
    text = api.client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels`` (a cluster total)."""
    return sum(value for (metric, have), value in samples.items()
               if metric == name and set(labels.items()) <= set(have))


def kinds(api: Api) -> list[tuple[str, str]]:
    return [(e["kind"], e["host"]) for e in api.ok("get", "/v1/events", params={"limit": 500})["items"]]


def test_tree_counters_events_and_host_states_in_one_scrape(small: tuple[ThreadTree, Api, HostMonitor]) -> None:
    tree, admin, monitor = small
    # Every agent reports its own figures and its hosts' sum.
    before = scrape(admin)
    assert total(before, "cloudland_tree_nodes", role="agent", state="up") == 2

    admin.ok("post", "/v1/tree/ping", json={})
    tree.root.submit("no.such.op", timeout=5).wait(10)  # a failed command: every host refuses it
    after = until(lambda: (s := scrape(admin)) and total(s, "cloudland_backend_ops_total", op="ping") == 4 and
                  total(s, "cloudland_backend_commands_refused_total", reason="unknown_op") == 4 and s)
    assert total(after, "cloudland_tree_commands_relayed_total", scope="self") >= 2
    assert total(after, "cloudland_backend_op_seconds_total", op="ping") > 0
    per_agent = {dict(labels)["node"] for (name, labels) in after if name == "cloudland_backend_ops_total"}
    assert per_agent <= {"root", "a0", "a1"} and per_agent & {"a0", "a1"}

    # A killed agent: its hosts move to another parent; counters, root stats and events say so.
    victim = next(n.node_id for n in tree.root.tree_status() if n.role == "agent" and n.children)
    orphans = {n.node_id for n in tree.root.tree_status() if n.parent == victim}
    tree.nodes[victim].stop()
    until(lambda: all(n.parent not in (None, victim) for n in tree.root.tree_status() if n.node_id in orphans))
    moved = until(lambda: (s := scrape(admin)) and
                  total(s, "cloudland_tree_reparents_total", scope="leaves") >= len(orphans) and s)
    assert total(moved, "cloudland_tree_reparent_seconds_total", scope="leaves") > 0
    assert total(moved, "cloudland_tree_root_reparents_total") >= len(orphans)
    assert total(moved, "cloudland_tree_nodes", role="agent", state="down") == 1
    monitor.run_once()
    events = kinds(admin)
    assert ("agent.down", victim) in events
    assert {host for kind, host in events if kind == "host.reparented"} >= orphans

    # A host that goes away and comes back: down, then up, in the gauges and in the events.
    tree.nodes["hv3"].stop()
    until(lambda: not next(n for n in tree.root.nodes() if n.node_id == "hv3").up)
    monitor.run_once()
    assert total(scrape(admin), "cloudland_hypervisors", status="down") == 1
    tree.host("hv3")
    tree.root.wait_for_hosts(4, timeout=10)
    monitor.run_once()
    assert total(scrape(admin), "cloudland_hypervisors", status="up") == 4
    events = kinds(admin)  # newest first
    assert events.index(("host.up", "hv3")) < events.index(("host.down", "hv3"))
