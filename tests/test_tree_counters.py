"""Counters travel up the tree: each relay's own, and the sum of what its leaves reported."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any, Callable, Iterator

import pytest

from sci import Leaf, Relay, TreeRoot, TreeSettings
from sci.counters import Counters, check_counters
from sci.status import valid_entries
from tests.support.trees import ThreadTree
from tests.support.waiting import until

SETTINGS = TreeSettings(heartbeat_interval=0.2, fanout=4, reattach_grace=2.0, counters_interval=0.2)

Tree = tuple[TreeRoot, dict[str, Relay], dict[str, Leaf]]


def build(settings: TreeSettings, agents: int = 2, hosts: int = 6) -> Iterator[Tree]:
    tree = ThreadTree(settings)
    try:
        relays = {f"a{i}": tree.agent(f"a{i}") for i in range(agents)}
        tree.wait_agents(list(relays))
        leaves = {f"h{i}": tree.host(f"h{i}") for i in range(hosts)}
        tree.root.wait_for_hosts(hosts, timeout=10)
        yield tree.root, relays, leaves
    finally:
        tree.stop()


@pytest.fixture
def tree() -> Iterator[Tree]:
    yield from build(SETTINGS)


def leaf_total(root: TreeRoot, key: str) -> float:
    return sum(c.leaves.get(key, 0) for c in root.tree_report().counters)


def test_leaves_and_relays_report_their_counts(tree: Tree) -> None:
    root, _, _ = tree
    root.submit("ping", timeout=5).wait(10)
    root.submit("ping", timeout=5).wait(10)
    root.submit("no.such.op", timeout=5).wait(10)
    until(lambda: leaf_total(root, "commands_run") == 12 or None)
    report = root.tree_report()
    by_node = {c.node_id: c for c in report.counters}
    assert set(by_node) == {"root", "a0", "a1"}
    assert leaf_total(root, "op_count:ping") == 12
    assert leaf_total(root, "op_seconds:ping") > 0
    until(lambda: leaf_total(root, "commands_refused:unknown_op") == 6 or None)
    relayed = [c.counters.get("commands_relayed", 0) for c in report.counters if c.role == "agent"]
    assert sum(relayed) > 0 and all(c.counters.get("results_relayed", 0) > 0 for c in report.counters
                                    if c.role == "agent" and c.counters.get("commands_relayed"))


def test_callers_share_status_queries(tree: Tree) -> None:
    root = tree[0]
    started: list[str] = []
    start = root.status.start

    def slow_start(query_id: str, timeout: float, done: Callable[[Any], None]) -> None:
        # Answers come 0.3 s late, so the callers below all ask while the query is out.
        started.append(query_id)
        start(query_id, timeout, lambda table: root.reactor.call_later(0.3, lambda: done(table)))

    root.status.start = slow_start  # type: ignore[method-assign]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: root.tree_report(timeout=1.0, max_age=60), range(4)))
    assert len(started) == 1 and all(r is reports[0] for r in reports)
    assert {n.node_id for n in reports[0].nodes} >= {"a0", "a1", "h0"}
    assert root.tree_report(timeout=1.0, max_age=60) is reports[0]  # old enough for this caller
    assert root.tree_report(timeout=1.0) is not reports[0] and len(started) == 2  # not for this one
    assert root.tree_report(timeout=1.0, max_age=0.2) is not reports[0] and len(started) == 3  # too old


def test_reparent_is_counted_and_reported_as_an_event(tree: Tree) -> None:
    root, relays, _ = tree
    victim = next(n for n in root.tree_status() if n.role == "agent" and n.children)
    orphans = {n.node_id for n in root.tree_status() if n.parent == victim.node_id}
    root.drain_events()
    relays[victim.node_id].stop()
    until(lambda: all(root.tree_status() and n.parent not in (None, victim.node_id)
                      for n in root.tree_status() if n.node_id in orphans) or None)
    until(lambda: leaf_total(root, "reparents") >= len(orphans) or None)
    assert leaf_total(root, "reparent_seconds") > 0
    assert root.stats.reparents >= len(orphans)
    events = root.drain_events()
    reparented = {e.node_id for e in events if e.kind == "reparented"}
    assert orphans <= reparented
    assert any(e.kind == "lost" and e.node_id == victim.node_id and e.role == "agent" for e in events)
    moved = next(e for e in events if e.kind == "reparented" and e.node_id in orphans)
    assert moved.previous_parent == victim.node_id and moved.parent != victim.node_id


def test_a_child_declared_dead_that_was_only_stalled_is_a_false_failure(tree: Tree) -> None:
    root, _, leaves = tree
    status = {n.node_id: n for n in root.tree_status()}
    parent = status["h0"].parent
    leaf = leaves["h0"]
    # Block the leaf's loop past its parent's patience: it is alive but silent.
    leaf.reactor.call_soon_threadsafe(lambda: time.sleep(SETTINGS.dead_after * 2.5))

    def parent_counters() -> dict[str, float]:
        return next(c.counters for c in root.tree_report().counters if c.node_id == parent)

    until(lambda: parent_counters().get("false_failures") == 1 or None, timeout=15)
    assert parent_counters()["children_declared_dead"] == 1
    until(lambda: {n.node_id: n.state for n in root.tree_status()}["h0"] == "up" or None)


def test_counting_off_reports_empty_tables() -> None:
    settings = TreeSettings(heartbeat_interval=0.2, fanout=4, counters_interval=0)
    for root, _, _ in build(settings, agents=1, hosts=2):
        root.submit("ping", timeout=5).wait(10)
        time.sleep(0.5)
        assert all(not c.counters and not c.leaves for c in root.tree_report().counters)


def test_counters_keep_increments_apart_from_totals() -> None:
    counters = Counters()
    counters.add("a")
    counters.add("b", 2.5)
    assert counters.take_increments() == {"a": 1, "b": 2.5}
    counters.add("a")
    assert counters.take_increments() == {"a": 1}
    assert counters.totals == {"a": 2, "b": 2.5}
    off = Counters(enabled=False)
    off.add("a")
    assert off.totals == {} and off.take_increments() == {}


@pytest.mark.parametrize("bad", [[], {"a": -1}, {"a": "1"}, {1: 1}, {"": 1}, {"x" * 200: 1},
                                 {f"k{i}": 1 for i in range(600)}, {"a": True}, {"a": float("inf")}])
def test_peers_cannot_send_nonsense_counters(bad: object) -> None:
    with pytest.raises(ValueError):
        check_counters(bad)


def test_malformed_status_entries_are_dropped() -> None:
    good = [[["h1", 2, 10]], {"commands_relayed": 3}, {"commands_run": 1}]
    table = {"a1": good, "a2": [[["h2", 2]], {}, {}], "a3": "garbage", "a4": [[], {"x": -5}, {}]}
    assert valid_entries("a1", table) == {"a1": good}  # type: ignore[arg-type]


def test_a_relay_reports_only_for_itself_and_relays_below_it() -> None:
    entry = [[], {}, {}]
    routes = {"a2": "a1", "a3": "a9"}
    table = {"a1": entry, "a2": entry, "a3": entry, "root": entry}
    assert set(valid_entries("a1", table, routes.get)) == {"a1", "a2"}
