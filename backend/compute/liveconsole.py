"""Live serial consoles: a guest's console streamed to the frontend, and typed into from it.

The frontend opens a session per instance (``console.open``, with a session id of its
choosing and a lease), types with ``console.write`` and closes it with ``console.close``.
What the guest writes goes up as ``console.output`` notices, in order and numbered; the end of
a console (the guest stopped, the session taken by a newer one, the lease not renewed) as one
``console.closed`` notice (``docs/ops.md``). A lease that lapses closes the session: a frontend
that died, or lost the lead, leaves no console streaming forever.

libvirt lets one console per domain be open: a session opened for an instance that has
another closes the other, which is told so.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from .exceptions import NotFound
from .hypervisor import ConsoleStream

__all__ = ["CONSOLE_CLOSED", "CONSOLE_OUTPUT", "LiveConsoles"]

log = structlog.get_logger("backend.compute.console")

CONSOLE_OUTPUT = "console.output"
CONSOLE_CLOSED = "console.closed"

#: how often lapsed leases are looked for
_REAP_INTERVAL_S = 1.0

Notify = Callable[[str, Any], None]
OpenStream = Callable[[str, Callable[[bytes], None], Callable[[str], None]], ConsoleStream]


@dataclass(slots=True)
class _Session:
    id: str
    instance_id: str
    stream: ConsoleStream | None
    expires: float
    #: the number of the next output notice
    seq: int = 0


class LiveConsoles:
    """This host's open console sessions. ``open_stream`` is the driver's ``open_console``."""

    def __init__(self, open_stream: OpenStream, notify: Notify, clock: Callable[[], float] = time.monotonic) -> None:
        self._open_stream = open_stream
        self._notify = notify
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._stopped = threading.Event()
        self._reaper: threading.Thread | None = None

    def open(self, instance_id: str, session_id: str, lease_s: float) -> None:
        """Open the session, or renew its lease if it is open."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                if session.instance_id != instance_id:
                    raise NotFound(f"console session {session_id} is for another instance")
                session.expires = self._clock() + lease_s
                return
            for other in [s for s in self._sessions.values() if s.instance_id == instance_id]:
                self._end(other, "another console session took it")
            session = _Session(session_id, instance_id, None, self._clock() + lease_s)
            # Under the lock: the stream's first output or its end waits until the session is known.
            session.stream = self._open_stream(instance_id, lambda data: self._output(session, data),
                                               lambda why: self._ended(session, why))
            self._sessions[session_id] = session
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="console-leases", daemon=True)
                self._reaper.start()
        log.info("console_opened", instance=instance_id, session=session_id)

    def write(self, session_id: str, data: bytes) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or session.stream is None:
            raise NotFound(f"console session {session_id} is not open on this host")
        session.stream.send(data)

    def close(self, session_id: str) -> None:
        """Close the session (idempotent): the frontend asked, so no notice."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None and session.stream is not None:
            session.stream.close()
            log.info("console_closed", instance=session.instance_id, session=session_id, reason="closed by the frontend")

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            for session in list(self._sessions.values()):
                self._end(session, "the hypervisor's backend stopped")

    def _output(self, session: _Session, data: bytes) -> None:
        with self._lock:
            if self._sessions.get(session.id) is not session:
                return
            seq = session.seq
            session.seq += 1
        self._notify(CONSOLE_OUTPUT, {"session": session.id, "instance": session.instance_id, "seq": seq, "data": data})

    def _ended(self, session: _Session, why: str) -> None:
        with self._lock:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]
                self._tell_closed(session, why)

    def _end(self, session: _Session, why: str) -> None:
        """Close ``session`` and tell the frontend why; the lock is held."""
        del self._sessions[session.id]
        if session.stream is not None:
            session.stream.close()
        self._tell_closed(session, why)

    def _tell_closed(self, session: _Session, why: str) -> None:
        log.info("console_closed", instance=session.instance_id, session=session.id, reason=why)
        self._notify(CONSOLE_CLOSED, {"session": session.id, "instance": session.instance_id, "reason": why})

    def _reap(self) -> None:
        while not self._stopped.wait(_REAP_INTERVAL_S):
            now = self._clock()
            with self._lock:
                for session in [s for s in self._sessions.values() if s.expires <= now]:
                    self._end(session, "its lease lapsed: the frontend stopped renewing it")
