"""The root rebalances the tree: a failed agent's orphans stay on their fallback parents (over
the fan-out, or on the root itself) until the root moves them to agents with room, a batch at a
time, while commands keep flowing.  Real sockets on loopback, one process."""

from __future__ import annotations

import time
from collections import Counter
from typing import Iterator

import pytest
from structlog.testing import capture_logs

from sci import Status, TreeSettings
from tests.support.trees import ThreadTree
from tests.support.waiting import until

FANOUT = 2
SETTINGS = TreeSettings(heartbeat_interval=0.2, fanout=FANOUT, reattach_grace=2.0, rebalance_interval=0.3,
                        rebalance_batch=1)
HOSTS = [f"h{i}" for i in range(4)]


@pytest.fixture
def tree() -> Iterator[ThreadTree]:
    built = ThreadTree(SETTINGS)
    try:
        built.agent("a0")
        built.agent("a1")
        built.wait_agents(["a0", "a1"])
        for host in HOSTS:
            built.host(host)
        built.root.wait_for_hosts(len(HOSTS), timeout=10)
        yield built
    finally:
        built.stop()


def load(tree: ThreadTree) -> Counter[str]:
    """Children per parent, as the root sees the tree."""
    return Counter(n.parent for n in tree.root.nodes() if n.up and n.parent is not None)


def balanced(tree: ThreadTree) -> bool:
    hosts = {n.node_id: n.parent for n in tree.root.nodes() if n.up and n.node_id in HOSTS}
    return (len(hosts) == len(HOSTS) and max(load(tree).values()) <= FANOUT
            and tree.root.node_id not in hosts.values())


def test_a_failed_agents_orphans_move_to_it_when_it_returns(tree: ThreadTree) -> None:
    orphans = {n.node_id for n in tree.root.nodes() if n.parent == "a0" and n.node_id in HOSTS}
    assert orphans
    tree.nodes["a0"].stop()
    until(lambda: all(n.up and n.parent != "a0" for n in tree.root.nodes() if n.node_id in orphans), 10,
          "the orphans on their fallbacks")
    assert not balanced(tree), load(tree)  # a1 or the root carries them now, past the fan-out
    moves = tree.root.stats.moves
    with capture_logs() as logs:
        tree.agent("a0")
        # Commands go out all along: the moves lose none and answer each host once.
        handles = []
        for _ in range(40):
            handles.append(tree.root.submit("ping", timeout=10))
            if balanced(tree) and tree.root.stats.moves > moves:
                break
            time.sleep(0.1)
        until(lambda: balanced(tree), 15, "every parent back under the fan-out")
    for handle in handles:
        results = handle.wait(15)
        assert sorted(results) == HOSTS and all(r.status is Status.OK for r in results.values()), results
    assert tree.root.stats.moves > moves
    assert any(e["event"] == "hosts_moving" for e in logs)
    assert not [e for e in logs if e["event"] in ("child_dead", "self_suspect")], "a move is not a death"
    events = tree.root.drain_events()
    assert not [e for e in events if e.kind == "lost" and e.node_id in HOSTS and e.node_id not in orphans]


def test_a_tree_within_the_fanout_is_left_alone(tree: ThreadTree) -> None:
    until(lambda: balanced(tree), 5)
    with capture_logs() as logs:
        time.sleep(SETTINGS.rebalance_interval * 4)
    assert tree.root.stats.moves == 0
    assert not [e for e in logs if e["event"] == "hosts_moving"]
