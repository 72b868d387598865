"""The root's live picture of who hangs under whom, kept up to date route change by route change.

The registrar consults it on every JOIN, so it must not cost a walk over the whole tree:
10,000 hosts joining must not mean 10,000 walks over 10,000 routes.
"""

from __future__ import annotations

import collections
from typing import Any

from .planner import Candidate
from .proto import NodeEntry, Role

__all__ = ["TreeIndex"]


class TreeIndex:
    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._children: collections.Counter[str] = collections.Counter()
        #: parent -> its children, in the order they came
        self._kids: dict[str, dict[str, None]] = {}
        self._agents: dict[str, NodeEntry] = {}
        self._backends: set[str] = set()

    def removed(self, removals: list[list[Any]]) -> None:
        for node, _seq in removals:
            parent = self._parent.pop(node, None)
            if parent is not None:
                self._unlink(node, parent)
            self._agents.pop(node, None)
            self._backends.discard(node)

    def added(self, entries: list[NodeEntry]) -> None:
        for entry in entries:
            node, parent = entry[0], entry[2]
            old = self._parent.get(node)
            if old is not None:
                self._unlink(node, old)
            self._parent[node] = parent
            self._children[parent] += 1
            self._kids.setdefault(parent, {})[node] = None
            if entry[3] == Role.AGENT:
                self._agents[node] = entry
            else:
                self._backends.add(node)

    def _unlink(self, node: str, parent: str) -> None:
        self._children[parent] -= 1
        kids = self._kids.get(parent)
        if kids is not None:
            kids.pop(node, None)
            if not kids:
                del self._kids[parent]

    def children_of(self, node: str) -> int:
        return self._children[node]

    def parent_of(self, node: str) -> str | None:
        return self._parent.get(node)

    def backend_children(self, node: str) -> list[str]:
        """The backends attached right under ``node``, oldest first."""
        return [n for n in self._kids.get(node, ()) if n in self._backends]

    def crowded(self, fanout: int) -> list[str]:
        """Parents that carry more than ``fanout`` children."""
        return [n for n, count in self._children.items() if count > fanout]

    def agent_candidates(self) -> list[Candidate]:
        """Live agents that can take children, with how many they have now."""
        return [Candidate(n, e[4], e[5], self._children[n]) for n, e in self._agents.items() if e[5]]

    def subtree_of(self, node: str) -> set[str]:
        out: set[str] = set()
        stack = [node]
        while stack:
            for child in self._kids.get(stack.pop(), ()):
                if child not in out:
                    out.add(child)
                    stack.append(child)
        return out
