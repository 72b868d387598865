"""How soon the tree finds dead nodes, as real processes with the product's default settings.

A killed node is declared dead within 3 s (its connection drops); a stopped (SIGSTOP) one, or
one whose loop hangs, once it missed ``heartbeat_misses`` heartbeats (3 s by default) and the
parent's next tick saw it (a quarter interval); a node that is only busy, on a machine whose
cores are all taken, never.
Times run from the signal (or the command that hangs the loop) to the root losing the route.
"""

from __future__ import annotations

import signal
import time
from typing import Iterator

import pytest

from bench.procs import Fleet, burn
from sci import Targets, TreeRoot, TreeSettings
from tests.support.treeprocs import run_leaf, run_relay
from tests.support.waiting import until

pytestmark = pytest.mark.slow

SETTINGS = TreeSettings(fanout=4)
AGENTS = ["a0", "a1"]
HOSTS = [f"h{i}" for i in range(6)]
DEAD_BOUND_S = 3.0
#: the silence that makes a peer dead, the parent's tick that sees it, and the route's way up
STOPPED_BOUND_S = SETTINGS.dead_after + SETTINGS.heartbeat_interval / 4 + 0.25
HUNG_BOUND_S = 15.0
#: CPU burners beside the busy node: twice the cores of this machine's CI.
BURNERS = 4


class Tree:
    """A root in this process; agents and leaves each in a process of its own."""

    def __init__(self) -> None:
        self.root = TreeRoot("tcp://127.0.0.1:0", SETTINGS).start()
        self.fleet = Fleet()

    def build(self) -> Tree:
        for name in AGENTS:
            self.fleet.spawn(name, run_relay, name, self.root.endpoint, SETTINGS)
        until(lambda: set(AGENTS) <= self.up(), 20, "the agents to attach")
        for name in HOSTS:
            self.fleet.spawn(name, run_leaf, name, self.root.endpoint, SETTINGS)
        self.root.wait_for_hosts(len(HOSTS), timeout=30)
        return self

    def up(self) -> set[str]:
        return {n.node_id for n in self.root.nodes() if n.up}

    def leaf_under_agent(self) -> str:
        parents = {n.node_id: n.parent for n in self.root.nodes() if n.up}
        return next(h for h in HOSTS if parents.get(h) in AGENTS)

    def seconds_until_down(self, node: str, since: float, bound: float) -> float:
        """Seconds from ``since`` until the root has no route to ``node`` (fails well past ``bound``)."""
        while node in self.up():
            assert time.monotonic() - since < bound * 2, f"{node} still up {bound * 2:.0f}s on"
            time.sleep(0.02)
        return time.monotonic() - since

    def close(self) -> None:
        self.fleet.stop(grace=3.0)
        self.root.stop()


@pytest.fixture
def tree() -> Iterator[Tree]:
    t = Tree()
    try:
        yield t.build()
    finally:
        t.close()


def test_killed_leaf_is_dead_within_3s(tree: Tree) -> None:
    victim = tree.leaf_under_agent()
    killed = time.monotonic()
    tree.fleet.kill(victim)
    assert tree.seconds_until_down(victim, killed, DEAD_BOUND_S) <= DEAD_BOUND_S


def test_stopped_leaf_is_dead_once_its_heartbeats_are_missed(tree: Tree) -> None:
    victim = tree.leaf_under_agent()
    stopped = time.monotonic()
    tree.fleet.signal(victim, signal.SIGSTOP)
    assert tree.seconds_until_down(victim, stopped, STOPPED_BOUND_S) <= STOPPED_BOUND_S


def test_stopped_agent_is_dead_once_its_heartbeats_are_missed_and_its_hosts_move(tree: Tree) -> None:
    victim = next(a for a in AGENTS if any(n.parent == a and n.up for n in tree.root.nodes()))
    orphans = [n.node_id for n in tree.root.nodes() if n.parent == victim and n.up]
    stopped = time.monotonic()
    tree.fleet.signal(victim, signal.SIGSTOP)
    assert tree.seconds_until_down(victim, stopped, STOPPED_BOUND_S) <= STOPPED_BOUND_S
    results = tree.root.submit("ping", targets=Targets.to(*orphans), timeout=10).wait(20)
    assert all(r.ok for r in results.values()), results
    assert all(n.parent != victim for n in tree.root.nodes() if n.node_id in orphans)


def test_hung_loop_is_dead_within_15s(tree: Tree) -> None:
    victim = tree.leaf_under_agent()
    hung = time.monotonic()
    tree.root.submit("test.hang", {}, Targets.to(victim), timeout=60)
    assert tree.seconds_until_down(victim, hung, HUNG_BOUND_S) <= HUNG_BOUND_S


def test_busy_node_on_a_starved_machine_is_never_dead(tree: Tree) -> None:
    busy = tree.leaf_under_agent()
    for i in range(BURNERS):
        tree.fleet.spawn(f"burn-{i}", burn)
    tree.root.drain_events()
    end = time.monotonic() + SETTINGS.dead_after * 2
    while time.monotonic() < end:
        # The busy leaf's loop computes for 2 s at a time, on cores the burners also want.
        work = tree.root.submit("test.busy", {"seconds": 2.0}, Targets.to(busy), timeout=30)
        everyone = tree.root.submit("ping", timeout=30)
        assert work.wait(40)[busy].ok
        assert all(r.ok for r in everyone.wait(40).values())
        assert set(HOSTS) <= tree.up()
    lost = [e for e in tree.root.drain_events() if e.kind == "lost"]
    assert not lost, lost
