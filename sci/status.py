"""Tree status queries in flight at one node: its own children's table plus its relays' replies."""

from __future__ import annotations

import time
from typing import Any, Callable

from . import proto
from .downlink import Downlink
from .proto import Role
from .reactor import Reactor, Timer

__all__ = ["StatusQueries"]

Table = dict[str, list[Any]]


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
        """This node's direct children and how long ago each was last heard from."""
        now = time.monotonic()
        return {self.node_id: [[c.node_id, int(c.role), int((now - c.last_rx) * 1000)]
                               for c in self.down.children.values()]}

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
        query.table.update(table)
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
