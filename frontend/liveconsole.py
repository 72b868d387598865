"""Live serial consoles on the leading frontend: the API's WebSocket clients on one side, a
host's console session on the other (``console.*`` ops and notices, ``docs/ops.md``).

One session per instance however many clients watch it: the host streams the guest's output
once, and the hub hands it to every client. One client at a time types (the *writer*): the
first that asks; the others watch, and the first of them that asked to type gets the seat
when the writer leaves. Input is sent one ``console.write`` at a time, what is typed
meanwhile going with the next: keystrokes arrive in order, however the tree delivers.

The host's session lives on a lease the hub renews while anyone is attached; the last client
to leave closes it. A client that cannot keep up with the output is dropped, not waited for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from sci import Result, Status, Targets

from .errors import Conflict, Unavailable
from .hostops import CONSOLE_CLOSE, CONSOLE_OPEN, CONSOLE_WRITE
from .notices import NoticeHandler
from .tasks import Submit

__all__ = ["CONSOLE_CLOSED", "CONSOLE_OUTPUT", "Attachment", "ConsoleHub", "Ended", "Seat", "notice_handlers"]

log = structlog.get_logger("frontend.liveconsole")

#: the hosts' notices (``backend/compute/liveconsole.py``)
CONSOLE_OUTPUT = "console.output"
CONSOLE_CLOSED = "console.closed"

#: how long a host keeps a session nobody renews: the hub renews it three times as often
LEASE_S = 30.0
#: how long a host may take to open a console or take input
OP_TIMEOUT_S = 10.0
#: output waiting for one client beyond this, and the client is dropped
MAX_BACKLOG_BYTES = 4 << 20
_HOW_CLOSED = 4410


@dataclass(frozen=True, slots=True)
class Ended:
    """The last item a client is given: why its console ended, and the WebSocket close code for it."""

    reason: str
    code: int = _HOW_CLOSED


@dataclass(frozen=True, slots=True)
class Seat:
    """A client's role changed: it may type now (``writer``), or it may not."""

    writer: bool
    message: str


Item = bytes | Seat | Ended


@dataclass(eq=False)
class Attachment:
    """One client of a console: the items it is sent (on its event loop), and its role."""

    id: int
    instance_id: str
    user: str
    wants_to_write: bool
    loop: asyncio.AbstractEventLoop
    items: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    writer: bool = False
    #: the monotonic time of the last byte to or from this client: what its idle timeout counts from
    touched: float = field(default_factory=time.monotonic)
    backlog: int = 0

    def give(self, item: Item) -> None:
        """Queue ``item`` for the client; any thread."""
        if isinstance(item, bytes):
            self.backlog += len(item)
        with contextlib.suppress(RuntimeError):  # its loop closed: the API is shutting down
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)

    def taken(self, item: Item) -> None:
        """The client was sent ``item``."""
        if isinstance(item, bytes):
            self.backlog -= len(item)
            self.touched = time.monotonic()


@dataclass(eq=False)
class _Console:
    instance_id: str
    host: str
    session: str
    attachments: list[Attachment] = field(default_factory=list)
    #: typed and not yet sent
    pending: bytearray = field(default_factory=bytearray)
    sending: bool = False
    next_seq: int = 0

    @property
    def writer(self) -> Attachment | None:
        return next((a for a in self.attachments if a.writer), None)


class ConsoleHub:
    """The leader's live consoles; ``attach`` and ``detach`` block (call them off the event loop)."""

    def __init__(self, submit: Submit, lease_s: float = LEASE_S) -> None:
        self._submit = submit
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._consoles: dict[str, _Console] = {}
        self._by_session: dict[str, _Console] = {}
        self._opening: dict[str, threading.Lock] = {}
        self._ids = itertools.count(1)
        self._running = False
        self._stopped = threading.Event()
        self._renewer: threading.Thread | None = None
        self._senders = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="console-input")

    # --- the leader's term ---------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._running = True
            self._stopped = threading.Event()
            self._renewer = threading.Thread(target=self._renew, args=(self._stopped,), name="console-leases",
                                             daemon=True)
            self._renewer.start()

    def stop(self, reason: str) -> None:
        """End every console (its clients are told ``reason``): this frontend stops leading."""
        with self._lock:
            self._running = False
            self._stopped.set()
            consoles = list(self._consoles.values())
            self._consoles.clear()
            self._by_session.clear()
            self._opening.clear()
        for console in consoles:
            self._close_host_session(console)
            for attachment in console.attachments:
                attachment.give(Ended(reason, 1012))

    # --- clients -------------------------------------------------------------------------

    def attach(self, instance_id: str, host: str, user: str, wants_to_write: bool,
               loop: asyncio.AbstractEventLoop) -> Attachment:
        """A new client of the instance's console (opened on ``host`` if it is not yet)."""
        with self._lock:
            if not self._running:
                raise Unavailable("live consoles run on the leading frontend, whose duties are not running here")
            opening = self._opening.setdefault(instance_id, threading.Lock())
        attachment = Attachment(next(self._ids), instance_id, user, wants_to_write, loop)
        with opening:  # one open per instance at a time; the others join what it opened
            with self._lock:
                console = self._consoles.get(instance_id)
            if console is None:
                console = self._open(instance_id, host)
            with self._lock:
                if self._consoles.get(instance_id) is not console:
                    raise Unavailable("the console closed as it opened; try again")
                console.attachments.append(attachment)
                if wants_to_write and console.writer is None:
                    attachment.writer = True
        attachment.give(Seat(attachment.writer, "you may type" if attachment.writer else
                             "another user is typing: you are watching" if wants_to_write else "you are watching"))
        log.info("console_attached", instance=instance_id, session=console.session, user=user,
                 writer=attachment.writer, clients=len(console.attachments))
        return attachment

    def detach(self, attachment: Attachment) -> None:
        """The client left; the last one closes the host's session. Idempotent."""
        with self._lock:
            console = self._consoles.get(attachment.instance_id)
            if console is None or attachment not in console.attachments:
                return
            console.attachments.remove(attachment)
            heir = None
            if attachment.writer:
                attachment.writer = False
                heir = next((a for a in console.attachments if a.wants_to_write), None)
                if heir is not None:
                    heir.writer = True
            last = not console.attachments
            if last:
                self._forget(console)
        if heir is not None:
            heir.give(Seat(True, "the user who was typing left: you may type"))
        log.info("console_detached", instance=attachment.instance_id, session=console.session, user=attachment.user,
                 clients=len(console.attachments))
        if last:
            self._close_host_session(console)

    def type(self, attachment: Attachment, data: bytes) -> bool:
        """Send what the client typed to the guest; False if the client is not the writer."""
        with self._lock:
            console = self._consoles.get(attachment.instance_id)
            if console is None or not attachment.writer or attachment not in console.attachments:
                return False
            attachment.touched = time.monotonic()
            console.pending += data
            if console.sending:
                return True
            console.sending = True
        self._senders.submit(self._send_input, console)
        return True

    # --- the hosts' notices --------------------------------------------------------------

    def on_output(self, host: str, body: Any) -> None:
        session, seq, data = body["session"], body["seq"], body["data"]
        if not isinstance(data, bytes) or not isinstance(seq, int):
            raise TypeError("console.output: seq and data must be a number and bytes")
        dropped: list[Attachment] = []
        with self._lock:
            console = self._by_session.get(session)
            if console is None or console.host != host:
                return
            if seq != console.next_seq:
                log.warning("console_output_gap", instance=console.instance_id, session=session,
                            expected=console.next_seq, got=seq)
            console.next_seq = seq + 1
            for attachment in console.attachments:
                if attachment.backlog + len(data) > MAX_BACKLOG_BYTES:
                    dropped.append(attachment)
                else:
                    attachment.give(data)
        for attachment in dropped:
            self.detach(attachment)
            attachment.give(Ended("the client did not keep up with the console's output", 4429))

    def on_closed(self, host: str, body: Any) -> None:
        reason = str(body["reason"])[:200]
        with self._lock:
            console = self._by_session.get(body["session"])
            if console is None or console.host != host:
                return
            self._forget(console)
        self._end(console, f"the console closed: {reason}")

    # --- inside --------------------------------------------------------------------------

    def _open(self, instance_id: str, host: str) -> _Console:
        console = _Console(instance_id, host, str(uuid.uuid4()))
        result = self._ask(console, CONSOLE_OPEN, {"instance_id": instance_id, "session": console.session,
                                                   "lease_s": self.lease_s})
        if not result.ok:
            if result.status is Status.ERROR:
                raise Conflict(f"the hypervisor did not open the console: {result.message}")
            raise Unavailable(f"the hypervisor did not open the console: {_failure(result)}")
        with self._lock:
            if not self._running:  # the term ended while the host opened it
                self._close_host_session(console)
                raise Unavailable("this frontend stopped leading as the console opened; try again")
            self._consoles[instance_id] = console
            self._by_session[console.session] = console
        log.info("console_session_opened", instance=instance_id, host=host, session=console.session)
        return console

    def _forget(self, console: _Console) -> None:
        """Drop the console from the hub; the lock is held."""
        if self._consoles.get(console.instance_id) is console:
            del self._consoles[console.instance_id]
        self._by_session.pop(console.session, None)

    def _end(self, console: _Console, reason: str) -> None:
        log.info("console_ended", instance=console.instance_id, session=console.session, reason=reason)
        for attachment in list(console.attachments):
            attachment.give(Ended(reason))

    def _send_input(self, console: _Console) -> None:
        while True:
            with self._lock:
                data = bytes(console.pending[:64 << 10])
                del console.pending[:len(data)]
                if not data or self._consoles.get(console.instance_id) is not console:
                    console.sending = False
                    return
            result = self._ask(console, CONSOLE_WRITE, {"session": console.session, "data": data})
            if not result.ok:
                with self._lock:
                    console.sending = False
                    self._forget(console)
                log.warning("console_write_failed", instance=console.instance_id, session=console.session,
                            reason=_failure(result))
                self._close_host_session(console)
                self._end(console, f"the console failed: {_failure(result)}")
                return

    def _renew(self, stopped: threading.Event) -> None:
        while not stopped.wait(self.lease_s / 3):
            with self._lock:
                consoles = list(self._consoles.values())
            for console in consoles:
                result = self._ask(console, CONSOLE_OPEN, {"instance_id": console.instance_id,
                                                           "session": console.session, "lease_s": self.lease_s})
                if result.ok or result.status is Status.TIMEOUT:  # a slow host: the next round tries again
                    continue
                with self._lock:
                    if self._consoles.get(console.instance_id) is not console:
                        continue
                    self._forget(console)
                self._end(console, f"the console was lost: {_failure(result)}")

    def _close_host_session(self, console: _Console) -> None:
        """Tell the host to close the session, without waiting for its answer."""
        try:
            self._submit(CONSOLE_CLOSE, {"session": console.session}, Targets.to(console.host), OP_TIMEOUT_S, None)
        except Exception as exc:  # the tree stopping: the host's lease closes the session
            log.info("console_close_unsent", instance=console.instance_id, session=console.session, reason=str(exc))

    def _ask(self, console: _Console, op: str, body: dict[str, Any]) -> Result:
        handle = self._submit(op, body, Targets.to(console.host), OP_TIMEOUT_S, None)
        try:
            result = handle.wait(OP_TIMEOUT_S + 5).get(console.host)
        except TimeoutError:
            result = None
        return result or Result(Status.TIMEOUT, message="no answer")


def _failure(result: Result) -> str:
    return result.message or result.status.name.lower()


def notice_handlers(hub: ConsoleHub) -> dict[str, NoticeHandler]:
    """The hub's handlers of hosts' notices, by topic (``NoticeRouter``)."""
    return {CONSOLE_OUTPUT: hub.on_output, CONSOLE_CLOSED: hub.on_closed}
