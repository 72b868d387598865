"""The backend's op registry: op name -> handler.  Each later driver is one more set of entries.

Every op declares the schema of its arguments (``backend/argcheck.py``); the registry checks
each command against it before the handler runs, and refuses one that breaks it (exit 64,
naming the field).  Handlers take the checked arguments (a dict) and return a msgpack-able
payload, or raise ``OpError`` with a message and an exit status.  They know nothing of the
tree or ZeroMQ.
"""

from __future__ import annotations

import concurrent.futures
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from sci import Executor, Result, Status
from sci.leaf import EXIT_BAD_ARGS, EXIT_UNKNOWN_OP

from .argcheck import ArgError, Record

__all__ = ["Op", "OpError", "OpRegistry"]

log = structlog.get_logger("backend.registry")

Handler = Callable[[dict[str, Any]], Any]


class OpError(Exception):
    """A handler's failure, reported to the caller with ``exit_status``."""

    def __init__(self, message: str, exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    handler: Handler
    #: what the handler may be given: anything else is refused before it runs
    args: Record
    #: changes the host: journalled on disk so that a replay never runs it twice
    durable: bool
    #: quick and non-blocking: runs on the tree's thread instead of the worker pool
    inline: bool = False
    #: running it twice is running it once (a delete, a declarative sync): a run that a restart of
    #: the backend cut short runs again when its command comes back, instead of answering "interrupted"
    idempotent: bool = False


class OpRegistry(Executor):
    def __init__(self, workers: int = 16) -> None:
        self._ops: dict[str, Op] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._on_close: list[Callable[[], None]] = []
        self._notices: Callable[[str, Any], None] | None = None

    def register(self, op: Op) -> None:
        if op.name in self._ops:
            raise ValueError(f"op {op.name!r} is registered twice")
        self._ops[op.name] = op

    def on_close(self, fn: Callable[[], None]) -> None:
        """``fn()`` when the backend stops: how a driver releases its connections."""
        self._on_close.append(fn)

    def notify(self, topic: str, body: Any) -> None:
        """Tell the frontend that something happened here that no op asked for (a driver's news); any thread."""
        send = self._notices
        if send is None:
            log.info("notice_dropped", topic=topic, reason="the backend is not in the tree yet")
            return
        send(topic, body)

    def send_notices(self, send: Callable[[str, Any], None]) -> None:
        """Where ``notify`` sends: the tree's leaf, once the daemon has one."""
        self._notices = send

    def load_module(self, name: str, config: Any) -> None:
        """Import ``name`` and call its ``register(registry, config)``: how drivers plug in.

        ``config`` is the backend's whole configuration, from which a driver reads its section.
        """
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if not callable(register):
            raise ValueError(f"ops module {name!r} has no register(registry, config) function")
        register(self, config)

    def names(self) -> list[str]:
        return sorted(self._ops)

    def is_durable(self, op: str) -> bool | None:
        entry = self._ops.get(op)
        return None if entry is None else entry.durable

    def reruns_interrupted(self, op: str) -> bool:
        entry = self._ops.get(op)
        return entry is not None and entry.idempotent

    def execute(self, op: str, args: Any, done: Callable[[Result], None]) -> None:
        entry = self._ops.get(op)
        if entry is None:  # the leaf refuses these before asking; any other caller is answered alike
            done(Result.error(f"unknown op {op!r}", EXIT_UNKNOWN_OP))
            return
        if entry.inline:
            done(self._run(entry, args))
        else:
            self._pool.submit(lambda: done(self._run(entry, args)))

    def _run(self, op: Op, args: Any) -> Result:
        if args is None:
            args = {}
        try:
            op.args.check(args)
            return Result(Status.OK, payload=op.handler(args))
        except ArgError as exc:
            # Values are left out: they may be user data or signed links (reasons never show text).
            log.warning("command_refused", op=op.name, field=exc.field, reason=exc.reason)
            return Result.error(f"{op.name}: {exc}", EXIT_BAD_ARGS)
        except OpError as exc:
            return Result.error(str(exc), exc.exit_status)
        except Exception as exc:  # a handler bug must become an error result, never a dead backend
            log.exception("op_crashed", op=op.name)
            return Result.error(f"{op.name} failed: {type(exc).__name__}: {exc}", 70)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for fn in reversed(self._on_close):
            try:
                fn()
            except Exception:  # one driver's failure to close must not keep the others open
                log.exception("op_driver_close_failed")
