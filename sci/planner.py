"""Where a joining node goes, and where it goes next if its parent dies.

Levels order the tree: the root is level 0 and every node's parent has a smaller planned
level than the node itself.  Fallback parents are chosen at the same level as the planned
parent (or above), so no failover can ever make a node its own ancestor.

* an agent goes as high as there is room (the root first, then level-1 agents, ...), so
  relays form the upper levels;
* a backend goes under the deepest agent with room, the least loaded first;
* with no room anywhere the least loaded candidate takes it anyway (over fan-out, logged):
  an operator adds agents, nothing is refused.

A placement looks at a few load buckets per level (sci.topology.ParentLoads), never at every
agent: a storm of 10,000 JOINs costs the registrar the same per JOIN with 300 agents as with 3.
"""

from __future__ import annotations

import collections
import itertools
import time
import zlib
from dataclasses import dataclass

import structlog

from .proto import Role
from .topology import ParentLoads

__all__ = ["Placement", "Planner"]

log = structlog.get_logger("sci.planner")

#: How long a slot stays promised to a node that was assigned but has not attached yet.
RESERVATION_S = 15.0
#: Parents in a fallback list besides the planned one and the root.
FALLBACKS = 2
#: The least loaded peers with room that a node's fallbacks are drawn from.
_FALLBACK_POOL = 16


@dataclass(slots=True)
class Placement:
    level: int
    parents: list[list[str]]  # [[node_id, endpoint], ...], planned parent first


class Planner:
    def __init__(self, root_id: str, root_endpoint: str, loads: ParentLoads) -> None:
        self.root_id = root_id
        self.root_endpoint = root_endpoint
        self.fanout = loads.fanout
        self._loads = loads
        loads.add_parent(root_id, 0, root_endpoint)
        # Slots promised to nodes that have not attached yet: counted in the loads, and
        # expired from a queue, so that a storm of thousands of joins does not rescan every
        # promise per join.
        self._reserved: dict[str, tuple[str, float]] = {}  # node -> (parent, until)
        self._expiry: collections.deque[tuple[float, str]] = collections.deque()

    def attached(self, node_id: str) -> None:
        reservation = self._reserved.pop(node_id, None)
        if reservation is not None:
            self._loads.shift(reservation[0], -1)

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            until, node = expiry.popleft()
            reservation = self._reserved.get(node)
            if reservation is not None and reservation[1] == until:
                self.attached(node)

    def place(self, node_id: str, role: Role, own_level: int | None = None,
              exclude: set[str] | None = None) -> Placement:
        """Choose a planned parent and fallbacks.

        ``own_level`` keeps a returning agent with a subtree at its level; ``exclude`` lists
        nodes that must not be its parent (its own subtree).
        """
        now = time.monotonic()
        self._expire(now)
        self.attached(node_id)  # a node asking again gives back what it was promised
        loads = self._loads
        skip = {node_id} | (exclude or set())
        levels = [lv for lv in loads.levels() if own_level is None or lv < own_level]
        # Agents as high as there is room, backends as deep (the root, level 0, last).
        order = levels if role is Role.AGENT else levels[::-1]
        choice = next((n for lv in order for n in itertools.islice(loads.with_room(lv, skip), 1)), None)
        if choice is None:
            # The root is always a candidate (never skipped, level 0 below any own_level).
            choice = next(n for lv in order if (n := loads.least_loaded_full(lv, skip)) is not None)
            log.warning("tree_over_fanout", node=node_id, parent=choice, children=loads.load(choice),
                        fanout=self.fanout, hint="start more agents")
        level = own_level if own_level is not None else loads.level(choice) + 1
        parents = [[choice, loads.endpoint(choice)]]
        if choice != self.root_id:
            peers = list(itertools.islice(loads.with_room(loads.level(choice), skip | {choice}), _FALLBACK_POOL))
            if peers:
                # Spread the children of one parent over different fallbacks, so that its death
                # does not pile all of them onto one sibling.
                start = zlib.crc32(node_id.encode()) % len(peers)
                rotated = peers[start:] + peers[:start]
                parents += [[n, loads.endpoint(n)] for n in rotated[:FALLBACKS]]
            parents.append([self.root_id, self.root_endpoint])
        until = now + RESERVATION_S
        self._reserved[node_id] = (choice, until)
        loads.shift(choice, 1)
        self._expiry.append((until, node_id))
        return Placement(level, parents)
