"""The root's live picture of who hangs under whom, kept up to date route change by route change.

The registrar consults it on every JOIN, so it must not cost a walk over the whole tree:
10,000 hosts joining must not mean 10,000 walks over 10,000 routes, nor over 300 agents.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from .proto import NodeEntry, Role

__all__ = ["ParentLoads", "TreeIndex"]


class ParentLoads:
    """The nodes that can take children (the root and every agent with an endpoint) by level and
    by load: children attached plus slots promised to nodes on their way.

    Parents with room sit in one bucket per load below the fan-out, so the least loaded parent
    with room at a level is found by looking at no more than ``fanout`` buckets, whatever the
    number of agents.  Loads are kept for any node named as a parent, even one not (or no
    longer) known as an agent, so that a count never goes wrong with the order of route changes.
    """

    def __init__(self, fanout: int) -> None:
        self.fanout = fanout
        self._load: collections.Counter[str] = collections.Counter()
        self._where: dict[str, tuple[int, str]] = {}  # parent -> (level, endpoint)
        #: level -> [load -> parents with that load, oldest first], for loads below the fan-out;
        #: a level, once seen, keeps its buckets (a tree has a handful of levels)
        self._room: dict[int, list[dict[str, None]]] = {}
        #: level -> parents at or past the fan-out
        self._full: dict[int, dict[str, None]] = {}
        #: level -> how many parents it has now
        self._per_level: collections.Counter[int] = collections.Counter()

    def load(self, node: str) -> int:
        return self._load[node]

    def level(self, node: str) -> int:
        return self._where[node][0]

    def endpoint(self, node: str) -> str:
        return self._where[node][1]

    def levels(self) -> list[int]:
        return sorted(level for level, count in self._per_level.items() if count)

    def add_parent(self, node: str, level: int, endpoint: str) -> None:
        self.drop_parent(node)
        self._where[node] = (level, endpoint)
        self._per_level[level] += 1
        self._file(node)

    def drop_parent(self, node: str) -> None:
        if node in self._where:
            self._unfile(node)
            self._per_level[self._where.pop(node)[0]] -= 1

    def shift(self, node: str, delta: int) -> None:
        """``node`` carries ``delta`` more children (attached or promised)."""
        known = node in self._where
        if known:
            self._unfile(node)
        load = self._load[node] + delta
        if load:
            self._load[node] = load
        else:
            del self._load[node]
        if known:
            self._file(node)

    def with_room(self, level: int, skip: set[str] | frozenset[str] = frozenset()) -> Iterator[str]:
        """Parents at ``level`` with room, the least loaded first (oldest first within a load)."""
        for bucket in self._room.get(level, ()):
            for node in bucket:
                if node not in skip:
                    yield node

    def least_loaded_full(self, level: int, skip: set[str] | frozenset[str] = frozenset()) -> str | None:
        """With no room anywhere: the least loaded of the full parents at ``level`` (a walk over
        them, which only an undersized tree pays)."""
        full = [n for n in self._full.get(level, ()) if n not in skip]
        return min(full, key=self._load.__getitem__) if full else None

    def room(self, min_level: int = 1) -> int:
        """Free slots under the parents at ``min_level`` or deeper."""
        return sum(len(bucket) * (self.fanout - load)
                   for level, buckets in self._room.items() if level >= min_level
                   for load, bucket in enumerate(buckets))

    def _file(self, node: str) -> None:
        level = self._where[node][0]
        load = self._load[node]
        if load < self.fanout:
            buckets = self._room.setdefault(level, [{} for _ in range(self.fanout)])
            buckets[max(0, load)][node] = None
        else:
            self._full.setdefault(level, {})[node] = None

    def _unfile(self, node: str) -> None:
        level = self._where[node][0]
        load = self._load[node]
        if load < self.fanout:
            del self._room[level][max(0, load)][node]
        else:
            del self._full[level][node]


class TreeIndex:
    def __init__(self, fanout: int) -> None:
        self._parent: dict[str, str] = {}
        #: parent -> its children, in the order they came
        self._kids: dict[str, dict[str, None]] = {}
        self._backends: set[str] = set()
        #: shared with the registrar (sci.planner), which adds the slots it promises
        self.loads = ParentLoads(fanout)

    def removed(self, removals: list[list[Any]]) -> None:
        for node, _seq in removals:
            parent = self._parent.pop(node, None)
            if parent is not None:
                self._unlink(node, parent)
            self.loads.drop_parent(node)
            self._backends.discard(node)

    def added(self, entries: list[NodeEntry]) -> None:
        for entry in entries:
            node, parent = entry[0], entry[2]
            old = self._parent.get(node)
            if old is not None:
                self._unlink(node, old)
            self._parent[node] = parent
            self.loads.shift(parent, 1)
            self._kids.setdefault(parent, {})[node] = None
            if entry[3] == Role.AGENT:
                if entry[5]:
                    self.loads.add_parent(node, entry[4], entry[5])
            else:
                self._backends.add(node)

    def _unlink(self, node: str, parent: str) -> None:
        self.loads.shift(parent, -1)
        kids = self._kids.get(parent)
        if kids is not None:
            kids.pop(node, None)
            if not kids:
                del self._kids[parent]

    def children_of(self, node: str) -> int:
        return len(self._kids.get(node, ()))

    def parent_of(self, node: str) -> str | None:
        return self._parent.get(node)

    def backend_children(self, node: str) -> list[str]:
        """The backends attached right under ``node``, oldest first."""
        return [n for n in self._kids.get(node, ()) if n in self._backends]

    def crowded(self, fanout: int) -> list[str]:
        """Parents that carry more than ``fanout`` children."""
        return [n for n, kids in self._kids.items() if len(kids) > fanout]

    def subtree_of(self, node: str) -> set[str]:
        out: set[str] = set()
        stack = [node]
        while stack:
            for child in self._kids.get(stack.pop(), ()):
                if child not in out:
                    out.add(child)
                    stack.append(child)
        return out
