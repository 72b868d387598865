from __future__ import annotations

import random

from sci.planner import Planner
from sci.proto import Role
from sci.topology import ParentLoads


def _loads(fanout: int, agents: list[tuple[str, int, int]]) -> ParentLoads:
    """Parent loads with ``agents`` as (node, level, children)."""
    loads = ParentLoads(fanout)
    for node, level, children in agents:
        loads.add_parent(node, level, f"tcp://{node}")
        loads.shift(node, children)
    return loads


def test_agents_go_high_backends_go_deep() -> None:
    loads = ParentLoads(fanout=2)
    p = Planner("root", "tcp://r:1", loads)
    a = p.place("a1", Role.AGENT)
    assert a.level == 1 and a.parents == [["root", "tcp://r:1"]]
    loads.shift("root", 1)  # a2 is attached too
    p.attached("a1")
    loads.shift("root", 1)
    loads.add_parent("a1", 1, "tcp://a1")
    loads.add_parent("a2", 1, "tcp://a2")
    full_root = p.place("a3", Role.AGENT)
    assert full_root.level == 2 and full_root.parents[0][0] in ("a1", "a2")
    p.attached("a3")
    loads.add_parent("a3", 2, "tcp://a3")
    loads.shift("a1", 1)
    loads.shift("a2", 1)
    b = p.place("h1", Role.BACKEND)
    assert b.parents[0][0] == "a3" and b.level == 3
    assert b.parents[-1] == ["root", "tcp://r:1"]


def test_fallbacks_are_peers_at_the_same_level_then_the_root() -> None:
    loads = _loads(32, [(f"a{i}", 1, 5) for i in range(6)])
    loads.add_parent("root", 0, "tcp://r:1")
    loads.shift("root", 6)
    p = Planner("root", "tcp://r:1", loads)
    placement = p.place("h1", Role.BACKEND)
    ids = [x[0] for x in placement.parents]
    assert len(ids) == 4 and ids[-1] == "root" and len(set(ids)) == 4
    assert all(i.startswith("a") for i in ids[:3])
    # Children of one parent are spread over different fallbacks.
    seconds = {tuple(x[0] for x in p.place(f"h{i}", Role.BACKEND).parents[:2]) for i in range(40)}
    assert len({s[1] for s in seconds}) > 2


def test_over_fanout_still_places_and_returning_agent_avoids_its_subtree() -> None:
    loads = _loads(1, [("a1", 1, 1), ("a2", 2, 1)])
    p = Planner("root", "tcp://r:1", loads)
    loads.shift("root", 1)
    assert p.place("h9", Role.BACKEND).parents[0][0] == "a2"  # the deepest, over its fan-out
    loads.drop_parent("a1")
    loads.shift("root", -1)
    loads.shift("a2", -1)
    back = p.place("a1", Role.AGENT, own_level=1, exclude={"a2"})
    assert back.parents[0][0] == "root" and back.level == 1


def test_loads_follow_every_shift_and_give_the_least_loaded_with_room_first() -> None:
    loads = _loads(4, [("a", 1, 3), ("b", 1, 1), ("c", 1, 4), ("d", 2, 0)])
    assert list(loads.with_room(1)) == ["b", "a"]
    assert loads.least_loaded_full(1) == "c"
    assert loads.room() == 1 + 3 + 4
    loads.shift("c", -2)
    loads.shift("b", 3)
    assert list(loads.with_room(1)) == ["c", "a"] and loads.least_loaded_full(1) == "b"
    loads.drop_parent("d")
    assert loads.levels() == [1] and loads.room() == 2 + 1
    loads.shift("d", 5)  # a node not (or no longer) a parent keeps its count for when it comes back
    loads.add_parent("d", 2, "tcp://d")
    assert loads.least_loaded_full(2) == "d" and loads.load("d") == 5


def test_placement_agrees_with_a_walk_over_every_parent() -> None:
    """Random loads, joins and departures: each choice is the one a scan of all parents makes."""
    rng = random.Random(7)
    fanout = 4
    loads = ParentLoads(fanout)
    p = Planner("root", "tcp://root", loads)
    level = {"root": 0}
    for i in range(40):
        node = f"a{i}"
        level[node] = rng.choice([1, 1, 2, 2, 3])
        loads.add_parent(node, level[node], f"tcp://{node}")
        loads.shift(node, rng.randrange(0, fanout + 2))
    for step in range(400):
        victim = rng.choice(sorted(level))
        if victim != "root" and rng.random() < 0.05:
            loads.drop_parent(victim)
            del level[victim]
        elif victim != "root":
            loads.shift(victim, -min(loads.load(victim), rng.randrange(0, 3)))
        role = Role.AGENT if step % 3 == 0 else Role.BACKEND
        loads_before = {n: loads.load(n) for n in level}
        choice = p.place(f"n{step}", role).parents[0][0]
        free = [n for n in level if loads_before[n] < fanout]
        pool = free or list(level)
        sign = 1 if role is Role.AGENT else -1
        best = min((sign * level[n], loads_before[n]) for n in pool)
        assert (sign * level[choice], loads_before[choice]) == best
        p.attached(f"n{step}")
