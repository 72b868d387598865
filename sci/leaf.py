"""A leaf: the tree's end on a hypervisor.  It runs each command once and answers every delivery.

The leaf knows nothing of what ops do.  It hands them to an ``Executor`` (the backend's op
registry) and keeps the ``Journal`` that makes execution exactly-once: a command id seen
before is answered from the record (or left to finish, if it is still running) instead of
being run again, whichever path the delivery came by.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import structlog
import zmq

from . import proto
from .counters import Counters
from .exceptions import FrameError
from .journal import Journal
from .node import LoopNode
from .proto import Frame, Kind, Role
from .reactor import Reactor, ZContext
from .results import Result, Status
from .security import Security
from .settings import TreeSettings
from .uplink import Uplink, UplinkOwner

__all__ = ["Executor", "Leaf", "EXIT_UNKNOWN_OP", "EXIT_INTERRUPTED", "EXIT_BAD_ARGS"]

log = structlog.get_logger("sci.leaf")

EXIT_UNKNOWN_OP = 127
EXIT_INTERRUPTED = 75
EXIT_BAD_ARGS = 64


class Executor:
    """Runs ops.  The backend's registry implements it; the tree only calls these two methods."""

    def is_durable(self, op: str) -> bool | None:
        """Whether ``op`` changes the host (so it is journalled on disk); None if there is no such op."""
        raise NotImplementedError

    def execute(self, op: str, args: Any, done: Callable[[Result], None]) -> None:
        """Run ``op`` and call ``done`` exactly once with its result, from any thread."""
        raise NotImplementedError

    def reruns_interrupted(self, op: str) -> bool:
        """Whether a run of ``op`` that a restart cut short may simply run again when its command comes
        back (the op is idempotent: a delete, a declarative sync); otherwise it is answered "interrupted"."""
        return False


class Leaf(UplinkOwner, LoopNode):
    def __init__(
        self,
        node_id: str,
        registrar: str | Sequence[str],
        settings: TreeSettings,
        executor: Executor,
        journal: Journal,
        groups: list[str] | None = None,
        reactor: Reactor | None = None,
        ctx: ZContext | None = None,
        security: Security | None = None,
    ) -> None:
        self.node_id = proto.check_node_id(node_id)
        self.settings = settings
        self.executor = executor
        self.journal = journal
        self.reactor = reactor or Reactor()
        self.ctx: ZContext = ctx or zmq.Context.instance()
        #: what this backend did; increments go to the parent every ``counters_interval``
        self.counters = Counters(settings.counting)
        self.up = Uplink(self.reactor, self.ctx, node_id, Role.BACKEND, registrar, settings, self, groups=groups,
                         counters=self.counters, security=security)
        #: cmd_id -> the latest wave it was delivered in, while its handler runs
        self._running: dict[str, int] = {}
        self._stop_tickers: list[Any] = []
        self._log = log.bind(node=node_id)

    def start(self) -> None:
        self.up.start()
        if self.settings.counting:
            self._stop_tickers.append(self.reactor.add_ticker(self.settings.counters_interval, self._report_counters))

    def close(self) -> None:
        for stop in self._stop_tickers:
            stop()
        self._stop_tickers.clear()
        self.up.stop()

    def keep_epoch(self, known: int, save: Callable[[int], None]) -> None:
        """Before ``start``: see ``Uplink.keep_epoch``."""
        self.up.keep_epoch(known, save)

    def notify(self, topic: str, body: Any) -> None:
        """Tell the root that something happened here (``topic``, a msgpack-able ``body``); from any thread.

        Best effort: a notice waits in the uplink's outbox while the parent is away, but one the
        outbox overflows, or that the root does not take, is gone; whoever needs the truth for
        sure asks the host again (the frontend's reconcile does).
        """
        if not topic or len(topic) > proto.MAX_TOPIC:
            raise ValueError(f"a notice's topic is 1 to {proto.MAX_TOPIC} characters, not {topic!r}")
        data = proto.pack_body(body)
        node_id = self.node_id

        def send() -> None:
            self.counters.add("notices_sent")
            self.up.send(lambda session: proto.notice(session, node_id, topic, data))

        if self.reactor.in_loop_thread():
            send()
        else:
            self.reactor.call_soon_threadsafe(send)

    def _report_counters(self) -> None:
        increments = self.counters.take_increments()
        if increments:
            self.up.send(lambda session: proto.counters(session, increments))

    def on_parent_frame(self, frame: Frame) -> None:
        if frame.kind is Kind.COMMAND:
            self._on_command(*frame.fields)

    def _on_command(self, cmd_id: str, wave: int, op: str, body: bytes, targets: list[str] | None,
                    ttl_ms: int, epoch: int) -> None:
        if targets is not None and self.node_id not in targets:
            self._log.warning("command_misrouted", cmd=cmd_id, op=op)
            return
        if cmd_id in self._running:
            self._running[cmd_id] = wave  # answer along the path of the latest delivery
            return
        if op == proto.MOVE_OP:  # never journalled: a move delivered again finds the host there
            self._move(cmd_id, wave, body)
            return
        entry = self.journal.lookup(cmd_id)
        if entry is not None and entry.result is None and self.executor.reruns_interrupted(op):
            self._log.info("command_rerun_after_interruption", cmd=cmd_id, op=op, wave=wave)
            self.counters.add("commands_rerun")
        elif entry is not None:
            if entry.result is not None:
                result = entry.result
            else:
                result = Result.error("interrupted: the backend restarted while this command ran; "
                                      "it was not run again", EXIT_INTERRUPTED).to_wire()
            self._log.info("command_replayed", cmd=cmd_id, op=op, wave=wave)
            self.counters.add("commands_replayed")
            self._answer(cmd_id, wave, result)
            return
        durable = self.executor.is_durable(op)
        if durable is None:
            self._log.warning("command_unknown_op", cmd=cmd_id, op=op)
            self.counters.add("commands_refused:unknown_op")
            self._answer(cmd_id, wave, Result.error(f"unknown op {op!r}", EXIT_UNKNOWN_OP).to_wire())
            return
        try:
            args = proto.unpack_body(body)
        except FrameError as exc:
            self.counters.add("commands_refused:undecodable")
            self._answer(cmd_id, wave, Result.error(str(exc), EXIT_BAD_ARGS).to_wire())
            return
        if durable:
            self.journal.started(cmd_id, durable)
        self._running[cmd_id] = wave
        started = time.monotonic()
        reactor = self.reactor

        def done(result: Result) -> None:
            if reactor.in_loop_thread():
                self._finish(cmd_id, op, durable, result, started)
            else:
                reactor.call_soon_threadsafe(lambda: self._finish(cmd_id, op, durable, result, started))

        self.executor.execute(op, args, done)

    def _finish(self, cmd_id: str, op: str, durable: bool, result: Result, started: float) -> None:
        wire = result.to_wire()
        self.journal.finished(cmd_id, wire, durable)
        wave = self._running.pop(cmd_id)
        took = time.monotonic() - started
        counters = self.counters
        counters.add("commands_run")
        counters.add(f"op_seconds:{op}", took)
        counters.add(f"op_count:{op}")
        if result.status is not Status.OK:
            counters.add("commands_refused:bad_args" if result.exit_status == EXIT_BAD_ARGS else "handler_errors")
        if durable:  # read-only ops (ping, info) would flood the log of a busy host
            self._log.info("command_done", cmd=cmd_id, op=op, status=result.status.name.lower(),
                           duration_s=round(took, 4))
        self._answer(cmd_id, wave, wire)

    def _move(self, cmd_id: str, wave: int, body: bytes) -> None:
        """The root moves this host to another parent: answer on the way out, then go."""
        try:
            level, parents = proto.unpack_body(body)[self.node_id]
        except (FrameError, KeyError, TypeError, ValueError):
            self._answer(cmd_id, wave, Result.error("a move names no parent for this host", EXIT_BAD_ARGS).to_wire())
            return
        if type(level) is not int or type(parents) is not list:
            self._answer(cmd_id, wave, Result.error("a move takes a level and a parent list", EXIT_BAD_ARGS).to_wire())
            return
        self._answer(cmd_id, wave, Result(Status.OK).to_wire())
        if self.up.move_to(level, parents):
            self.counters.add("moves")

    def _answer(self, cmd_id: str, wave: int, wire: list[Any]) -> None:
        table = {self.node_id: wire}
        self.up.send(lambda session: proto.results(session, cmd_id, wave, table))
