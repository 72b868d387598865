"""Route tables converge whatever order additions and removals arrive in."""

from __future__ import annotations

from sci.proto import Role
from sci.routes import RouteTable


def entry(node: str, seq: int, parent: str = "p", role: Role = Role.BACKEND, inc: int = 1) -> list:
    return [node, [inc, seq], parent, int(role), 2, None, []]


def test_newer_attach_wins_and_late_removal_from_old_path_is_ignored() -> None:
    t = RouteTable()
    t.add("a1", [entry("h", 1)])
    change = t.add("a2", [entry("h", 2)])  # h re-attached under a2 before a1's death was noticed
    assert change.moved == [("h", "a1", "a2")]
    assert not t.remove("a1", [["h", [1, 1]]])  # late removal through the old path
    assert t.child_of("h") == "a2"
    assert not t.add("a1", [entry("h", 1)])  # a stale addition loses too
    assert t.child_of("h") == "a2"


def test_relay_reattaching_elsewhere_brings_its_subtree_with_the_same_seq() -> None:
    t = RouteTable()
    t.add("x", [entry("h", 5)])
    t.add("y", [entry("h", 5)])
    assert t.child_of("h") == "y"
    t.remove("x", [["h", [1, 5]]])
    assert t.child_of("h") == "y"


def test_remove_child_drops_everything_behind_it() -> None:
    t = RouteTable()
    t.add("a1", [entry("a1", 1, role=Role.AGENT), entry("h1", 1), entry("h2", 1)])
    t.add("a2", [entry("h3", 1)])
    change = t.remove_child("a1")
    assert sorted(n for n, _ in change.removed) == ["a1", "h1", "h2"]
    assert list(t.backends()) == ["h3"]


def test_partition_by_next_hop() -> None:
    t = RouteTable()
    t.add("a1", [entry("a1", 1, role=Role.AGENT), entry("h1", 1), entry("h2", 1)])
    t.add("a2", [entry("h3", 1)])
    shares, unroutable = t.partition(["h1", "h3", "h2", "zz", "a1"])
    assert shares == {"a1": ["h1", "h2"], "a2": ["h3"]}
    assert unroutable == ["zz", "a1"]  # agents are not command targets
    everything, _ = t.partition(None)
    assert everything == {"a1": None, "a2": None}
    assert t.expected_for(everything) == {"h1": "a1", "h2": "a1", "h3": "a2"}
