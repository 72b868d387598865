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
        self._agents: dict[str, NodeEntry] = {}

    def removed(self, removals: list[list[Any]]) -> None:
        for node, _seq in removals:
            parent = self._parent.pop(node, None)
            if parent is not None:
                self._children[parent] -= 1
            self._agents.pop(node, None)

    def added(self, entries: list[NodeEntry]) -> None:
        for entry in entries:
            node, parent = entry[0], entry[2]
            old = self._parent.get(node)
            if old is not None:
                self._children[old] -= 1
            self._parent[node] = parent
            self._children[parent] += 1
            if entry[3] == Role.AGENT:
                self._agents[node] = entry

    def children_of(self, node: str) -> int:
        return self._children[node]

    def agent_candidates(self) -> list[Candidate]:
        """Live agents that can take children, with how many they have now."""
        return [Candidate(n, e[4], e[5], self._children[n]) for n, e in self._agents.items() if e[5]]

    def subtree_of(self, node: str) -> set[str]:
        kids: dict[str, list[str]] = {}
        for child, parent in self._parent.items():
            kids.setdefault(parent, []).append(child)
        out: set[str] = set()
        stack = [node]
        while stack:
            for child in kids.get(stack.pop(), []):
                if child not in out:
                    out.add(child)
                    stack.append(child)
        return out
