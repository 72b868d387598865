"""A root replaced by another (standby frontends): nodes find the new one, and the old one is fenced.

Every node is given every registrar; only the running root listens.  Each root has an epoch
(the frontend's leadership generation) that its WELCOMEs and COMMANDs carry, and a node drops
a command whose epoch is below the highest it has seen.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest

from backend.ops import system
from backend.registry import OpRegistry
from sci import Journal, Leaf, Relay, Status, TreeRoot, TreeSettings
from service.epochs import EpochFile
from tests.support.trees import ThreadTree
from tests.support.waiting import until

SETTINGS = TreeSettings(heartbeat_interval=0.2, fanout=4, reattach_grace=2.0)


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _root(endpoint: str, epoch: int) -> TreeRoot:
    root = TreeRoot(endpoint, SETTINGS)
    root.root_epoch = epoch
    return root.start()


def _leaf(name: str, registrars: list[str]) -> Leaf:
    registry = OpRegistry(2)
    system.register(registry)
    return Leaf(name, registrars, SETTINGS, registry, Journal(None))


@pytest.fixture
def standby_tree() -> Iterator[tuple[list[str], ThreadTree]]:
    """Three registrar addresses; a ThreadTree whose nodes know all three, its root on the first."""
    endpoints = [_free_endpoint() for _ in range(3)]
    nodes = ThreadTree(SETTINGS)
    nodes.root.stop()
    nodes.root = _root(endpoints[0], 1)
    try:
        yield endpoints, nodes
    finally:
        nodes.stop()


def test_nodes_follow_the_root_to_another_registrar(standby_tree: tuple[list[str], ThreadTree]) -> None:
    endpoints, nodes = standby_tree
    relay = Relay("a0", endpoints, "tcp://127.0.0.1:0", SETTINGS)
    nodes.spawn(relay)
    leaves = [_leaf(f"h{i}", endpoints) for i in range(3)]
    for leaf in leaves:
        nodes.spawn(leaf)
    nodes.root.wait_for_hosts(3, timeout=10)
    assert all(r.ok for r in nodes.root.submit("ping", timeout=5).wait(10).values())

    nodes.root.stop()  # the leader is gone; a standby at the third address takes over
    nodes.root = _root(endpoints[2], 2)
    nodes.root.wait_for_hosts(3, timeout=15)
    results = nodes.root.submit("ping", timeout=5).wait(10)
    assert set(results) == {"h0", "h1", "h2"} and all(r.ok for r in results.values()), results
    assert relay.up is not None and relay.up.epoch == 2
    until(lambda: all(leaf.up.epoch == 2 for leaf in leaves), 5, "the leaves to see the new epoch")


@pytest.mark.parametrize("through_agent", [False, True], ids=["host", "agent"])
def test_a_root_of_an_older_epoch_makes_no_host_act(standby_tree: tuple[list[str], ThreadTree],
                                                     through_agent: bool) -> None:
    endpoints, nodes = standby_tree
    relay = None
    if through_agent:
        relay = Relay("a0", endpoints, "tcp://127.0.0.1:0", SETTINGS)
        nodes.spawn(relay)
        nodes.wait_agents(["a0"])
    leaf = _leaf("h0", endpoints)
    nodes.spawn(leaf)
    nodes.root.wait_for_hosts(1, timeout=10)
    nodes.root.root_epoch = 5
    assert nodes.root.submit("ping", timeout=5).wait(10)["h0"].ok
    refuser = relay if relay is not None else leaf
    assert refuser.up is not None and refuser.up.epoch == 5

    nodes.root.root_epoch = 4  # what a leader paused past its lease still sends when it wakes
    stale = nodes.root.submit("ping", timeout=1).wait(5)
    assert stale["h0"].status is not Status.OK
    until(lambda: refuser.counters.totals.get("commands_refused:stale_epoch") == 1, 5, "the refusal to be counted")
    assert leaf.counters.totals.get("commands_run", 0) == 1

    nodes.root.root_epoch = 6  # a later leader is obeyed again
    assert nodes.root.submit("ping", timeout=5).wait(10)["h0"].ok


@pytest.mark.parametrize("through_agent", [False, True], ids=["host", "agent"])
def test_a_restarted_node_remembers_the_epoch_it_had_seen(standby_tree: tuple[list[str], ThreadTree],
                                                          through_agent: bool, tmp_path: Path) -> None:
    """Its file says 5: a root of epoch 3 (a former leader waking up) makes nothing run on it."""
    endpoints, nodes = standby_tree
    epochs = EpochFile(tmp_path / "root-epoch")
    epochs.save(5)
    relay = None
    if through_agent:
        relay = Relay("a0", endpoints, "tcp://127.0.0.1:0", SETTINGS)
        relay.keep_epoch(epochs.load(), epochs.save)
        nodes.spawn(relay)
        nodes.wait_agents(["a0"])
    leaf = _leaf("h0", endpoints)
    if not through_agent:
        leaf.keep_epoch(epochs.load(), epochs.save)
    nodes.spawn(leaf)
    nodes.root.wait_for_hosts(1, timeout=10)
    nodes.root.root_epoch = 3
    assert nodes.root.submit("ping", timeout=1).wait(5)["h0"].status is not Status.OK
    assert leaf.counters.totals.get("commands_run", 0) == 0
    nodes.root.root_epoch = 7
    assert nodes.root.submit("ping", timeout=5).wait(10)["h0"].ok
    until(lambda: epochs.load() == 7, 5, "the higher epoch saved")


def test_an_unreadable_epoch_file_counts_as_none(tmp_path: Path) -> None:
    path = tmp_path / "root-epoch"
    assert EpochFile(path).load() == 0
    path.write_text("garbage\n")
    assert EpochFile(path).load() == 0
    EpochFile(path).save(12)
    assert EpochFile(path).load() == 12 and path.read_text() == "12\n"
