"""Which child leads to which node: every parent's view of its subtree.

Entries travel up as children attach (HELLO) and as the subtree changes (ROUTES).  Two rules
make the table converge whatever order changes arrive in from different children:

* an addition wins if its ``seq`` (the node's own attach counter) is not older than the one
  held; equal seqs are accepted too, because a relay that re-attaches elsewhere brings its
  subtree along unchanged;
* a removal applies only if it comes from the child the route currently goes through and
  names the seq it holds, so a late removal from the old path cannot undo a newer route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .proto import NodeEntry, Role

__all__ = ["Route", "RouteChange", "RouteTable", "entry_seq"]


def entry_seq(entry: NodeEntry) -> tuple[int, int]:
    seq = entry[1]
    return (int(seq[0]), int(seq[1]))


@dataclass(slots=True)
class Route:
    child: str
    seq: tuple[int, int]
    entry: NodeEntry


@dataclass(slots=True)
class RouteChange:
    """What one batch of updates changed here; the owner sends it on up."""

    added: list[NodeEntry] = field(default_factory=list)
    removed: list[list[Any]] = field(default_factory=list)
    #: (node, previous child or None, new child or None) for every node whose route moved,
    #: appeared or went away: in-flight commands for it may need sending again.
    moved: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def extend(self, other: "RouteChange") -> None:
        self.added.extend(other.added)
        self.removed.extend(other.removed)
        self.moved.extend(other.moved)


class RouteTable:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        #: backends only: the default target set of a broadcast
        self._backends: dict[str, None] = {}
        #: child -> nodes routed through it, so losing a child costs its subtree, not the table
        self._via: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, node: str) -> bool:
        return node in self._routes

    def get(self, node: str) -> Route | None:
        return self._routes.get(node)

    def child_of(self, node: str) -> str | None:
        route = self._routes.get(node)
        return route.child if route is not None else None

    def backends(self) -> Iterable[str]:
        return self._backends.keys()

    def backend_count(self) -> int:
        return len(self._backends)

    def entries(self) -> list[NodeEntry]:
        return [r.entry for r in self._routes.values()]

    def add(self, child: str, entries: Iterable[NodeEntry]) -> RouteChange:
        change = RouteChange()
        for entry in entries:
            node = entry[0]
            seq = entry_seq(entry)
            cur = self._routes.get(node)
            if cur is not None:
                if seq < cur.seq or (seq == cur.seq and cur.child == child and cur.entry == entry):
                    continue
            if cur is not None and cur.child != child:
                self._via[cur.child].discard(node)
            self._routes[node] = Route(child, seq, entry)
            self._via.setdefault(child, set()).add(node)
            if entry[3] == Role.BACKEND:
                self._backends[node] = None
            change.added.append(entry)
            prev = cur.child if cur is not None else None
            if prev != child or cur is None or cur.seq != seq:
                change.moved.append((node, prev, child))
        return change

    def remove(self, child: str, removals: Iterable[list[Any]]) -> RouteChange:
        change = RouteChange()
        for node, seq in removals:
            cur = self._routes.get(node)
            if cur is None or cur.child != child or tuple(seq) != cur.seq:
                continue
            self._drop(node, cur, change)
        return change

    def remove_child(self, child: str) -> RouteChange:
        """Everything reached through ``child`` is gone (it died or left)."""
        change = RouteChange()
        for node in list(self._via.get(child, ())):
            self._drop(node, self._routes[node], change)
        self._via.pop(child, None)
        return change

    def _drop(self, node: str, cur: Route, change: RouteChange) -> None:
        del self._routes[node]
        self._via[cur.child].discard(node)
        self._backends.pop(node, None)
        change.removed.append([node, list(cur.seq)])
        change.moved.append((node, cur.child, None))

    def partition(self, targets: list[str] | None) -> tuple[dict[str, list[str] | None], list[str]]:
        """Split a target list by next hop.

        Returns ({child: its share, or None meaning 'all of your backends'}, unroutable hosts).
        """
        if targets is None:
            shares: dict[str, list[str] | None] = {}
            for node in self._backends:
                shares[self._routes[node].child] = None
            return shares, []
        by_child: dict[str, list[str] | None] = {}
        unroutable = []
        routes = self._routes
        for host in targets:
            route = routes.get(host)
            if route is None or route.entry[3] != Role.BACKEND:
                unroutable.append(host)
            else:
                share = by_child.get(route.child)
                if share is None:
                    by_child[route.child] = [host]
                else:
                    share.append(host)
        return by_child, unroutable

    def expected_for(self, shares: dict[str, list[str] | None]) -> dict[str, str]:
        """The hosts each share will answer for, mapped to the child they come through."""
        expected: dict[str, str] = {}
        for child, share in shares.items():
            if share is not None:
                for host in share:
                    expected[host] = child
        if any(share is None for share in shares.values()):
            routes = self._routes
            for host in self._backends:
                child = routes[host].child
                if shares.get(child, []) is None:
                    expected[host] = child
        return expected
