"""Where a joining node goes, and where it goes next if its parent dies.

Levels order the tree: the root is level 0 and every node's parent has a smaller planned
level than the node itself.  Fallback parents are chosen at the same level as the planned
parent (or above), so no failover can ever make a node its own ancestor.

* an agent goes as high as there is room (the root first, then level-1 agents, ...), so
  relays form the upper levels;
* a backend goes under the deepest agent with room, the least loaded first;
* with no room anywhere the least loaded candidate takes it anyway (over fan-out, logged):
  an operator adds agents, nothing is refused.
"""

from __future__ import annotations

import collections
import time
import zlib
from dataclasses import dataclass

import structlog

from .proto import Role

__all__ = ["Candidate", "Placement", "Planner"]

log = structlog.get_logger("sci.planner")

#: How long a slot stays promised to a node that was assigned but has not attached yet.
RESERVATION_S = 15.0
#: Parents in a fallback list besides the planned one and the root.
FALLBACKS = 2


@dataclass(slots=True)
class Candidate:
    node_id: str
    level: int
    endpoint: str
    children: int


@dataclass(slots=True)
class Placement:
    level: int
    parents: list[list[str]]  # [[node_id, endpoint], ...], planned parent first


class Planner:
    def __init__(self, root_id: str, root_endpoint: str, fanout: int) -> None:
        self.root_id = root_id
        self.root_endpoint = root_endpoint
        self.fanout = fanout
        # Slots promised to nodes that have not attached yet.  Kept as counts plus an expiry
        # queue, so that a storm of thousands of joins does not rescan every promise per join.
        self._reserved: dict[str, tuple[str, float]] = {}  # node -> (parent, until)
        self._promised: collections.Counter[str] = collections.Counter()  # parent -> slots
        self._expiry: collections.deque[tuple[float, str]] = collections.deque()

    def attached(self, node_id: str) -> None:
        reservation = self._reserved.pop(node_id, None)
        if reservation is not None:
            self._promised[reservation[0]] -= 1

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            until, node = expiry.popleft()
            reservation = self._reserved.get(node)
            if reservation is not None and reservation[1] == until:
                self.attached(node)

    def place(self, node_id: str, role: Role, agents: list[Candidate], root_children: int,
              own_level: int | None = None, exclude: set[str] | None = None) -> Placement:
        """Choose a planned parent and fallbacks.

        ``agents`` are the live agents with their current child counts; ``own_level`` keeps a
        returning agent with a subtree at its level; ``exclude`` lists nodes that must not be
        its parent (its own subtree).
        """
        now = time.monotonic()
        self._expire(now)
        self.attached(node_id)  # a node asking again gives back what it was promised
        extra = self._promised
        root = Candidate(self.root_id, 0, self.root_endpoint, root_children + extra.get(self.root_id, 0))
        pool = [root] + [
            Candidate(a.node_id, a.level, a.endpoint, a.children + extra.get(a.node_id, 0))
            for a in agents
            if a.node_id != node_id and (exclude is None or a.node_id not in exclude)
        ]
        if own_level is not None:
            pool = [c for c in pool if c.level < own_level]
        free = [c for c in pool if c.children < self.fanout]
        if role is Role.AGENT:
            choice = min(free or pool, key=lambda c: (c.level, c.children))
        else:
            deeper = [c for c in free if c.level > 0] or free
            choice = min(deeper or pool, key=lambda c: (-c.level, c.children))
        if not free:
            log.warning("tree_over_fanout", node=node_id, parent=choice.node_id, children=choice.children,
                        fanout=self.fanout, hint="start more agents")
        level = own_level if own_level is not None else choice.level + 1
        parents = [[choice.node_id, choice.endpoint]]
        if choice.node_id != self.root_id:
            peers = sorted((c for c in free if c.level == choice.level and c.node_id != choice.node_id),
                           key=lambda c: (c.children, c.node_id))
            if peers:
                # Spread the children of one parent over different fallbacks, so that its death
                # does not pile all of them onto one sibling.
                start = zlib.crc32(node_id.encode()) % len(peers)
                rotated = peers[start:] + peers[:start]
                parents += [[c.node_id, c.endpoint] for c in rotated[:FALLBACKS]]
            parents.append([self.root_id, self.root_endpoint])
        until = now + RESERVATION_S
        self._reserved[node_id] = (choice.node_id, until)
        self._promised[choice.node_id] += 1
        self._expiry.append((until, node_id))
        return Placement(level, parents)
