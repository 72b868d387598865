"""Notices: what happened on a host, sent up the tree by its backend to a handler at the root.

They travel like results (a relay passes them on, a parent takes a notice only from the child
its origin is routed through), keep their order, and wait in the outbox while a host is away.
"""

from __future__ import annotations

import queue
from typing import Any, Iterator

import pytest
import zmq

from backend.ops import system
from backend.registry import OpRegistry
from sci import Journal, Leaf, TreeSettings, proto
from sci.proto import Kind, Role
from tests.support.trees import ThreadTree
from tests.support.waiting import until

SETTINGS = TreeSettings(heartbeat_interval=0.2, fanout=4, reattach_grace=2.0)


@pytest.fixture
def tree() -> Iterator[tuple[ThreadTree, "queue.Queue[tuple[str, str, Any]]"]]:
    nodes = ThreadTree(SETTINGS)
    heard: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    nodes.root.notice_handler = lambda origin, topic, body: heard.put((origin, topic, body))
    try:
        yield nodes, heard
    finally:
        nodes.stop()


def _next(heard: "queue.Queue[tuple[str, str, Any]]") -> tuple[str, str, Any]:
    return heard.get(timeout=10)


def test_notices_reach_the_root_in_order_directly_and_through_an_agent(
        tree: tuple[ThreadTree, "queue.Queue[tuple[str, str, Any]]"]) -> None:
    nodes, heard = tree
    nodes.wait_agents([nodes.agent("a0").node_id])
    hosts = [nodes.host(f"h{i}") for i in range(6)]  # fan-out 4: some under the agent
    nodes.root.wait_for_hosts(6, timeout=10)
    assert any(n.parent == "a0" for n in nodes.root.nodes() if n.role == "backend")
    for leaf in hosts:
        for n in range(3):
            leaf.notify("instance.power", {"instance": f"i-{leaf.node_id}", "n": n})
    got = [_next(heard) for _ in range(18)]
    for leaf in hosts:
        mine = [body["n"] for origin, topic, body in got if origin == leaf.node_id]
        assert mine == [0, 1, 2], got
    assert {topic for _, topic, _ in got} == {"instance.power"}
    assert all(body["instance"] == f"i-{origin}" for origin, _, body in got)


def test_a_notice_sent_while_the_host_is_away_arrives_once_it_attaches(
        tree: tuple[ThreadTree, "queue.Queue[tuple[str, str, Any]]"]) -> None:
    nodes, heard = tree
    registry = OpRegistry(1)
    system.register(registry)
    leaf = Leaf("late", nodes.root.endpoint, SETTINGS, registry, Journal(None))
    leaf.notify("instance.power", {"instance": "i-1"})  # before it even runs
    nodes.spawn(leaf)
    assert _next(heard) == ("late", "instance.power", {"instance": "i-1"})


def test_a_host_cannot_send_a_notice_for_another(tree: tuple[ThreadTree, "queue.Queue[tuple[str, str, Any]]"]) -> None:
    nodes, heard = tree
    nodes.host("h0")
    nodes.root.wait_for_hosts(1, timeout=10)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"h7")
    sock.connect(nodes.root.endpoint)
    try:
        sock.send(proto.hello("h7", [["h7", [1, 1], "", int(Role.BACKEND), 1, None, [], None]]))
        assert sock.poll(5000)
        welcome = proto.decode(sock.recv())
        assert welcome.kind is Kind.WELCOME
        session = welcome.fields[0]
        sock.send(proto.notice(session, "h0", "instance.power", proto.pack_body({"forged": True})))
        sock.send(proto.notice(session, "h7", "instance.power", proto.pack_body({"mine": True})))
        assert _next(heard) == ("h7", "instance.power", {"mine": True})  # the forged one never came
    finally:
        sock.close()
    assert heard.empty()
    until(lambda: nodes.root.counters.totals.get("frames_dropped:foreign_notice", 0) == 1, 5,
          "the forgery counted")


@pytest.mark.parametrize("topic", ["", "t" * (proto.MAX_TOPIC + 1)])
def test_a_topic_is_short_and_not_empty(tree: tuple[ThreadTree, "queue.Queue[tuple[str, str, Any]]"],
                                        topic: str) -> None:
    nodes, _ = tree
    leaf = nodes.host("h0")
    with pytest.raises(ValueError, match="topic"):
        leaf.notify(topic, {})
