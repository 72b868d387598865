from __future__ import annotations

from sci.planner import Candidate, Planner
from sci.proto import Role


def test_agents_go_high_backends_go_deep() -> None:
    p = Planner("root", "tcp://r:1", fanout=2)
    a = p.place("a1", Role.AGENT, [], root_children=0)
    assert a.level == 1 and a.parents == [["root", "tcp://r:1"]]
    full_root = p.place("a3", Role.AGENT, [Candidate("a1", 1, "tcp://a1", 0), Candidate("a2", 1, "tcp://a2", 0)],
                        root_children=2)
    assert full_root.level == 2 and full_root.parents[0][0] in ("a1", "a2")
    agents = [Candidate("a1", 1, "tcp://a1", 1), Candidate("a2", 1, "tcp://a2", 1), Candidate("a3", 2, "tcp://a3", 0)]
    b = p.place("h1", Role.BACKEND, agents, root_children=2)
    assert b.parents[0][0] == "a3" and b.level == 3
    assert b.parents[-1] == ["root", "tcp://r:1"]


def test_fallbacks_are_peers_at_the_same_level_then_the_root() -> None:
    p = Planner("root", "tcp://r:1", fanout=32)
    agents = [Candidate(f"a{i}", 1, f"tcp://a{i}", 5) for i in range(6)]
    placement = p.place("h1", Role.BACKEND, agents, root_children=6)
    ids = [x[0] for x in placement.parents]
    assert len(ids) == 4 and ids[-1] == "root" and len(set(ids)) == 4
    assert all(i.startswith("a") for i in ids[:3])
    # Children of one parent are spread over different fallbacks.
    seconds = {tuple(x[0] for x in p.place(f"h{i}", Role.BACKEND, agents, 6).parents[:2]) for i in range(40)}
    assert len({s[1] for s in seconds}) > 2


def test_over_fanout_still_places_and_returning_agent_avoids_its_subtree() -> None:
    p = Planner("root", "tcp://r:1", fanout=1)
    agents = [Candidate("a1", 1, "tcp://a1", 1), Candidate("a2", 2, "tcp://a2", 1)]
    assert p.place("h9", Role.BACKEND, agents, root_children=1).parents
    back = p.place("a1", Role.AGENT, [Candidate("a2", 2, "tcp://a2", 0)], root_children=0, own_level=1,
                   exclude={"a2"})
    assert back.parents[0][0] == "root" and back.level == 1
