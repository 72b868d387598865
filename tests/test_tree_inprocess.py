"""The tree's logic end to end in one process (threads, loopback): quick enough for every run."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

from backend.ops import system
from backend.registry import OpRegistry
from sci import Journal, Leaf, Relay, Status, Targets, TreeRoot, TreeSettings

SETTINGS = TreeSettings(heartbeat_interval=0.2, fanout=4, reattach_grace=2.0)


@pytest.fixture
def tree() -> Iterator[tuple[TreeRoot, dict[str, Relay], dict[str, Leaf]]]:
    root = TreeRoot("tcp://127.0.0.1:0", SETTINGS).start()
    relays: dict[str, Relay] = {}
    leaves: dict[str, Leaf] = {}
    threads = []

    def spawn(node: Relay | Leaf) -> None:
        t = threading.Thread(target=node.run, daemon=True)
        t.start()
        threads.append(t)

    try:
        for i in range(3):
            relays[f"a{i}"] = Relay(f"a{i}", root.endpoint, "tcp://127.0.0.1:0", SETTINGS)
            spawn(relays[f"a{i}"])
        deadline = time.monotonic() + 10
        while len([n for n in root.nodes() if n.up]) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(9):
            registry = OpRegistry(2)
            system.register(registry)
            leaves[f"h{i}"] = Leaf(f"h{i}", root.endpoint, SETTINGS, registry, Journal(None), groups=[f"g{i % 2}"])
            spawn(leaves[f"h{i}"])
        root.wait_for_hosts(9, timeout=10)
        yield root, relays, leaves
    finally:
        for node in [*leaves.values(), *relays.values()]:
            node.stop()
        for t in threads:
            t.join(5)
        root.stop()


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
