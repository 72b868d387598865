from __future__ import annotations

from sci.gather import Gather
from sci.results import Status


def make() -> Gather:
    return Gather("c", 1, "ping", b"", epoch=0, flush_at=0, deadline=0, pending={"h1": "a", "h2": "a", "h3": "b"})


def test_complete_when_every_host_answered_or_lost() -> None:
    g = make()
    assert g.take({"h1": [0, {}, 0]}) == {}
    g.lose("h3", "relay b died")
    assert not g.complete
    g.take({"h2": [1, "boom", 3]})
    assert g.complete
    assert g.answers["h3"][0] == Status.LOST


def test_strays_pass_through_and_late_answer_replaces_lost() -> None:
    g = make()
    assert g.take({"zz": [0, {}, 0]}) == {"zz": [0, {}, 0]}
    g.lose("h1", "gone")
    g.take({"h1": [0, {}, 0]})  # it answered after all (its result was in an outbox)
    assert g.answers["h1"][0] == Status.OK


def test_resend_only_when_the_next_hop_changed_or_the_host_was_lost() -> None:
    g = make()
    assert not g.resend("h1", "a")  # same child: the repair is further down
    assert g.resend("h1", "b")
    assert g.pending["h1"] == "b"
    g.lose("h2", "gone")
    assert g.resend("h2", "a")
    g.take({"h3": [0, {}, 0]})
    assert not g.resend("h3", "a")  # answered already
