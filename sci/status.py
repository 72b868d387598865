"""Tree status queries in flight at one node: its own children's table plus its relays' replies."""

from __future__ import annotations

import time
from typing import Any, Callable

import structlog

from . import proto
from .counters import check_counters
from .downlink import Downlink
from .proto import Role
from .reactor import Reactor, Timer

__all__ = ["StatusQueries", "valid_entries"]

log = structlog.get_logger("sci.status")

Table = dict[str, list[Any]]


def _valid_entry(value: Any) -> bool:
    if type(value) is not list or len(value) != 3 or type(value[0]) is not list:
        return False
    for row in value[0]:
        if not (type(row) is list and len(row) == 3 and type(row[0]) is str and type(row[1]) is int
                and type(row[2]) is int):
            return False
    try:
        check_counters(value[1])
        check_counters(value[2])
    except ValueError:
        return False
    return True


def valid_entries(child: str, table: Table, routed: Callable[[str], str | None] | None = None) -> Table:
    """The entries of a relay's reply that have the right shape, and (given ``routed``, which
    says which child a node is reached through) speak for the relay itself or nodes below it:
    the others are dropped and logged.  A key must be a node id's string: the report sorts
    them, and bytes do not sort with str."""
    bad = [node for node, value in table.items()
           if type(node) is not str or not _valid_entry(value)
           or (routed is not None and node != child and routed(node) != child)]
    if not bad:
        return table
    log.warning("status_entries_dropped", child=child, nodes=bad[:10], count=len(bad))
    return {node: value for node, value in table.items() if node not in bad}


class _Query:
    __slots__ = ("table", "waiting", "done", "timer")

    def __init__(self, table: Table, waiting: set[str], done: Callable[[Table], None]) -> None:
        self.table = table
        self.waiting = waiting
        self.done = done
        self.timer: Timer | None = None


class StatusQueries:
    def __init__(self, node_id: str, reactor: Reactor, down: Downlink) -> None:
        self.node_id = node_id
        self.reactor = reactor
        self.down = down
        self._queries: dict[str, _Query] = {}

    def own_table(self) -> Table:
        """This node's direct children and how long ago each was last heard from, its own
        counters, and the sum of what its leaves reported."""
        now = time.monotonic()
        children = [[c.node_id, int(c.role), int((now - c.last_rx) * 1000)] for c in self.down.children.values()]
        return {self.node_id: [children, dict(self.down.counters.totals), dict(self.down.leaf_counters)]}

    def start(self, query_id: str, timeout: float, done: Callable[[Table], None]) -> None:
        """Ask the relays below; ``done(table)`` once all answered or ``timeout`` passed."""
        table = self.own_table()
        agents = {c.node_id for c in self.down.children.values() if c.role is Role.AGENT}
        if not agents:
            done(table)
            return
        query = self._queries[query_id] = _Query(table, agents, done)
        query.timer = self.reactor.call_later(timeout, lambda: self._finish(query_id))
        data = proto.status(query_id, int(timeout * 1000))
        for agent in agents:
            self.down.send(agent, data)

    def reply(self, child: str, query_id: str, table: Table) -> bool:
        """Take a relay's reply; False if no such query is open here."""
        query = self._queries.get(query_id)
        if query is None:
            return False
        query.table.update(valid_entries(child, table, self.down.routes.child_of))
        query.waiting.discard(child)
        if not query.waiting:
            self._finish(query_id)
        return True

    def clear(self) -> None:
        for query in self._queries.values():
            if query.timer is not None:
                query.timer.cancel()
        self._queries.clear()

    def _finish(self, query_id: str) -> None:
        query = self._queries.pop(query_id, None)
        if query is not None:
            if query.timer is not None:
                query.timer.cancel()
            query.done(query.table)
