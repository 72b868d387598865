"""The tree's logic end to end in one process (threads, loopback): quick enough for every run."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from sci import Leaf, Relay, Status, Targets, TreeRoot, TreeSettings
from sci.proto import Role
from sci.uplink import beat_phase
from tests.support.trees import ThreadTree

SETTINGS = TreeSettings(heartbeat_interval=0.2, fanout=4, reattach_grace=2.0)


@pytest.fixture
def tree() -> Iterator[tuple[TreeRoot, dict[str, Relay], dict[str, Leaf]]]:
    nodes = ThreadTree(SETTINGS)
    try:
        relays = {f"a{i}": nodes.agent(f"a{i}") for i in range(3)}
        nodes.wait_agents(list(relays))
        leaves = {f"h{i}": nodes.host(f"h{i}", groups=[f"g{i % 2}"]) for i in range(9)}
        nodes.root.wait_for_hosts(9, timeout=10)
        yield nodes.root, relays, leaves
    finally:
        nodes.stop()


def test_addressing_modes(tree: tuple[TreeRoot, dict[str, Relay], dict[str, Leaf]]) -> None:
    root, _, _ = tree
    everyone = root.submit("ping", timeout=5).wait(10)
    assert set(everyone) == {f"h{i}" for i in range(9)} and all(r.ok for r in everyone.values())
    one = root.submit("info", targets=Targets.to("h4"), timeout=5).wait(10)
    assert one["h4"].payload["cpus"] >= 1
    group = root.submit("ping", targets=Targets.named("g1"), timeout=5).wait(10)
    assert set(group) == {"h1", "h3", "h5", "h7"}
    root.define_group("pair", ["h0", "h8"])
    assert set(root.submit("ping", targets=Targets.named("pair"), timeout=5).wait(10)) == {"h0", "h8"}


def test_results_stream_and_status(tree: tuple[TreeRoot, dict[str, Relay], dict[str, Leaf]]) -> None:
    root, _, _ = tree
    handle = root.submit("ping", timeout=5)
    seen = [host for host, _ in handle.results(timeout=10)]
    assert sorted(seen) == sorted(handle.targets) and handle.latency(seen[0]) is not None
    status = {n.node_id: n for n in root.tree_status(timeout=2)}
    assert status["root"].children == 3
    assert all(status[f"a{i}"].parent == "root" and status[f"a{i}"].state == "up" for i in range(3))
    assert sum(status[f"a{i}"].children for i in range(3)) == 9
    assert all(status[f"h{i}"].heartbeat_age is not None for i in range(9))


def test_relay_stopped_mid_command_hosts_answer_via_fallback(
        tree: tuple[TreeRoot, dict[str, Relay], dict[str, Leaf]]) -> None:
    root, relays, _ = tree
    victim = next(n for n in root.tree_status() if n.role == "agent" and n.children)
    orphans = {n.node_id for n in root.tree_status() if n.parent == victim.node_id}
    relays[victim.node_id].stop()  # closes its sockets: children see the disconnect
    results = root.submit("ping", timeout=8).wait(15)
    assert all(results[h].status is Status.OK for h in orphans), results
    parents = {n.node_id: n.parent for n in root.tree_status()}
    assert all(parents[h] != victim.node_id for h in orphans)


def test_quiet_tree_keeps_every_link(tree: tuple[TreeRoot, dict[str, Relay], dict[str, Leaf]]) -> None:
    root, relays, leaves = tree
    sessions = {n: node.up.session for n, node in [*relays.items(), *leaves.items()]}  # type: ignore[union-attr]
    time.sleep(SETTINGS.dead_after * 4)  # no traffic but heartbeats
    assert {n: node.up.session for n, node in [*relays.items(), *leaves.items()]} == sessions  # type: ignore[union-attr]
    assert all(n.state == "up" for n in root.tree_status())


def test_a_parents_children_beat_together(tree: tuple[TreeRoot, dict[str, Relay], dict[str, Leaf]]) -> None:
    """At rest a parent reads its children's heartbeats in one wake-up, not one each: they all
    send theirs on the parent's phase of the wall clock's grid (``beat_phase``)."""
    _, relays, _ = tree
    interval = SETTINGS.heartbeat_interval
    time.sleep(SETTINGS.dead_after)  # past the start-up's frames: only heartbeats now
    for name, relay in relays.items():
        phase = beat_phase(name, interval)
        time.sleep(interval - (time.time() - phase - interval / 2) % interval)  # halfway to its next beat
        to_wall = time.time() - time.monotonic()
        late = [round((c.last_rx + to_wall - phase) % interval, 3)
                for c in relay.down.children.values() if c.role is Role.BACKEND]
        assert len(late) >= 2
        assert all(seconds < interval / 4 for seconds in late), (name, late)
