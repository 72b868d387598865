"""Silence is judged against the peers that are heard: the rules, without processes or clocks.

Every node here is built but never started (one parent binds its socket): the tests set when
each peer was last heard and ask what the node concludes, so no outcome depends on how fast
this machine is.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import zmq

from sci.downlink import Child, Downlink, DownlinkOwner
from sci.links import QUORUM, Silences, silences_of
from sci.proto import Role
from sci.reactor import Reactor, has_input
from sci.settings import TreeSettings
from sci.uplink import LinkState, Uplink, UplinkOwner
from tests.support.waiting import until

SETTINGS = TreeSettings()
NOW = 1_000.0


class Peer:
    def __init__(self, last_rx: float) -> None:
        self.last_rx = last_rx


def test_defaults_keep_the_detection_bounds() -> None:
    # A stopped child is found by its parent within 3 s, a hung loop within 15 s; the parent's
    # own heartbeats go less often, and its children wait longer for them.
    assert SETTINGS.dead_after == 3.0
    assert SETTINGS.silence_limit + SETTINGS.heartbeat_interval / 4 < 15.0
    assert SETTINGS.down_interval > SETTINGS.heartbeat_interval
    assert SETTINGS.parent_dead_after >= 2 * SETTINGS.down_interval


def test_a_few_silent_links_are_not_weighed_together() -> None:
    board = Silences()
    board.members.update(Peer(NOW - 100) for _ in range(QUORUM - 1))
    assert not board.most_silent(NOW, SETTINGS.parent_dead_after)


@pytest.mark.parametrize(("silent", "suspect"), [(0, False), (4, False), (5, True), (8, True)])
def test_most_links_silent_makes_a_process_suspect_itself(silent: int, suspect: bool) -> None:
    board = Silences()
    board.members.update(Peer(NOW - 100 if i < silent else NOW) for i in range(8))
    assert board.most_silent(NOW, SETTINGS.parent_dead_after) is suspect


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    yield r
    r.close()


def _downlink(reactor: Reactor, silences: list[float]) -> Downlink:
    down = Downlink(reactor, zmq.Context.instance(), "p", "tcp://127.0.0.1:0", SETTINGS, DownlinkOwner())
    for i, silence in enumerate(silences):
        down.children[f"c{i}"] = Child(f"c{i}", Role.BACKEND, i, NOW - silence, NOW, 0)
    return down


def _silent(down: Downlink) -> list[Child]:
    return [c for c in down.children.values() if NOW - c.last_rx > SETTINGS.dead_after]


def test_a_parent_declares_a_child_silent_among_heard_siblings(reactor: Reactor) -> None:
    down = _downlink(reactor, [10, 0, 0, 0, 0])
    assert [c.node_id for c in down._beyond_doubt(_silent(down), NOW)] == ["c0"]


def test_a_parent_with_few_children_judges_each_alone(reactor: Reactor) -> None:
    down = _downlink(reactor, [10, 10])
    assert len(down._beyond_doubt(_silent(down), NOW)) == 2


def test_a_parent_whose_children_mostly_fell_silent_waits_for_the_hung_bound(reactor: Reactor) -> None:
    hung = SETTINGS.silence_limit + 1
    down = _downlink(reactor, [10, 10, hung, 10, 0])
    assert [c.node_id for c in down._beyond_doubt(_silent(down), NOW)] == ["c2"]
    assert down.counters.totals.get("self_suspects") == 1


class _Owner(UplinkOwner):
    pass


def _attached(reactor: Reactor, node: str, last_rx: float) -> Uplink:
    up = Uplink(reactor, zmq.Context.instance(), node, Role.BACKEND, "tcp://127.0.0.1:1", SETTINGS, _Owner())
    up.parents = [("p0", "tcp://127.0.0.1:2", None), ("p1", "tcp://127.0.0.1:3", None)]
    up._move(LinkState.ATTACHING)
    up._move(LinkState.ATTACHED)
    up.last_rx = last_rx
    return up


def test_an_uplink_leaves_a_parent_silent_while_others_are_heard(reactor: Reactor) -> None:
    ups = [_attached(reactor, f"h{i}", NOW) for i in range(QUORUM)]
    ups[0].last_rx = NOW - SETTINGS.parent_dead_after - 1
    assert ups[0]._may_judge(NOW, SETTINGS.parent_dead_after + 1)


def test_an_uplink_keeps_its_parent_while_most_of_its_process_hears_nothing(reactor: Reactor) -> None:
    silence = SETTINGS.parent_dead_after + 1
    ups = [_attached(reactor, f"h{i}", NOW - silence) for i in range(QUORUM)]
    assert not ups[0]._may_judge(NOW, silence)
    assert ups[0]._may_judge(NOW, SETTINGS.silence_limit + 1)


def test_an_uplink_that_left_its_parent_is_no_longer_weighed(reactor: Reactor) -> None:
    ups = [_attached(reactor, f"h{i}", NOW) for i in range(QUORUM)]
    ups[0].stop(say_bye=False)
    assert ups[0] not in silences_of(reactor).members and ups[1] in silences_of(reactor).members


def test_a_parent_reads_what_waits_before_calling_a_dropped_child_dead(reactor: Reactor) -> None:
    """A child the root moves says BYE and closes its connection: if its parent found the
    connection gone before reading the BYE, it declared a live host dead (seen in bench.tree)."""
    ctx = zmq.Context.instance()
    down = Downlink(reactor, ctx, "p", "tcp://127.0.0.1:0", SETTINGS, DownlinkOwner())
    down.start()
    child = ctx.socket(zmq.DEALER)
    try:
        child.setsockopt(zmq.IDENTITY, b"c0")
        child.connect(down.bound_endpoint)
        down.children["c0"] = Child("c0", Role.BACKEND, 7, NOW, NOW, 0)
        child.send(b"its last words")
        sock = down._sock
        assert sock is not None
        until(lambda: has_input(sock), 5, "the frame to arrive")
        down._connection_gone("c0", 7)
        assert "c0" in down.children
        sock.recv_multipart()
        down._connection_gone("c0", 7)
        assert "c0" not in down.children
    finally:
        child.close(linger=0)
        down.close()
