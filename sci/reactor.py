"""One thread's event loop over ZeroMQ sockets and timers.

Why not ``zmq.Poller``: ``zmq_poll`` walks every socket on every call, which dominates at the
thousands of sockets a process simulating many hosts holds.  Here each socket's ``ZMQ_FD`` sits
in an epoll set, so a wake-up costs only for sockets that have something.

``ZMQ_FD`` is edge-like: it signals that the socket's state *may* have changed, and any
send or receive can consume that signal.  So a socket is asked for ``EVENTS`` after it
fires, and again after anything was sent on it (``touch``), until it reports no input.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import select
import threading
import time
from typing import Callable, TypeAlias, cast

import structlog
import zmq

__all__ = ["Reactor", "Timer", "ZSocket", "ZContext", "has_input", "NOBLOCK", "NOBLOCK_SNDMORE"]

ZSocket: TypeAlias = "zmq.Socket[bytes]"
ZContext: TypeAlias = "zmq.Context[zmq.Socket[bytes]]"

# pyzmq's constants are IntFlag enums: combining or testing them builds enum members, which
# costs as much as the socket call itself.  The hot paths use plain ints.
_FD = int(zmq.FD)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
NOBLOCK = int(zmq.NOBLOCK)
NOBLOCK_SNDMORE = int(zmq.NOBLOCK | zmq.SNDMORE)


def has_input(sock: ZSocket) -> bool:
    """Whether a frame waits to be read (this also processes the socket's pending commands)."""
    return bool(cast(int, sock.get(_EVENTS)) & _POLLIN)

log = structlog.get_logger("sci.reactor")

#: Longest one turn of the loop serves sockets before timers get their turn.
_TURN_S = 0.05

ReadHandler = Callable[[ZSocket], bool]
"""Reads up to a batch from the socket; returns True if it stopped with input still pending."""


class Timer:
    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, tuple[ZSocket, ReadHandler]] = {}
        self._ready: dict[int, None] = {}  # insertion-ordered set of fds with input pending
        self._touched: dict[int, None] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._running = False
        self._thread_id: int | None = None
        self._tickers: dict[tuple[float, float | None], dict[int, Callable[[], None]]] = {}
        self._fds: dict[ZSocket, int] = {}
        #: the socket whose handler is running: its own read loop re-checks it after sends
        self._serving = -1

    # Sockets -----------------------------------------------------------------------------

    def add_reader(self, sock: ZSocket, handler: ReadHandler) -> None:
        fd = cast(int, sock.get(_FD))
        self._fds[sock] = fd
        self._readers[fd] = (sock, handler)
        self._epoll.register(fd, select.EPOLLIN)
        self._ready[fd] = None  # input may already be queued

    def remove_reader(self, sock: ZSocket) -> None:
        fd = self._fds.pop(sock, None)
        if fd is None:
            return
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)
        self._ready.pop(fd, None)
        self._touched.pop(fd, None)

    def touch(self, sock: ZSocket) -> None:
        """Note that ``sock`` was sent on: its input must be re-checked this turn."""
        fd = self._fds.get(sock)
        if fd is not None and fd != self._serving:
            self._touched[fd] = None

    # Timers and calls -----------------------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, fn)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def add_ticker(self, interval: float, fn: Callable[[], None], phase: float | None = None) -> Callable[[], None]:
        """Call ``fn`` every ``interval`` seconds; returns a function that stops it.

        Tickers of one interval (and phase) share a single timer: a process simulating thousands
        of hosts ticks them all in one pass instead of keeping thousands of timers in the heap.

        With ``phase`` the ticks fall on the wall clock's grid, ``phase`` seconds past every
        multiple of ``interval`` since the epoch, so that processes, on any hosts whose clocks
        agree, tick together: a parent's children send their heartbeats at one moment and it
        reads them in one wake-up rather than one wake-up (of its loop and its I/O thread) each.
        """
        key = (interval, None if phase is None else phase % interval)
        group = self._tickers.get(key)
        if group is None:
            group = self._tickers[key] = {}
            self._schedule_ticks(key, group)
        index = next(self._seq)
        group[index] = fn
        return lambda: group.pop(index, None) and None

    def _schedule_ticks(self, key: tuple[float, float | None], group: dict[int, Callable[[], None]]) -> None:
        interval, phase = key

        def next_on_grid(after: float) -> float:
            assert phase is not None
            return after + interval - (after - phase) % interval

        due = 0.0 if phase is None else next_on_grid(time.time())

        def tick() -> None:
            nonlocal due
            for f in list(group.values()):
                f()
            if not group:
                del self._tickers[key]
                return
            if phase is None:
                self.call_later(interval, tick)
                return
            # From the tick it was due at, not from now: a timer that fires a little early or
            # late neither ticks twice nor drifts off the grid.
            now = time.time()
            due = due + interval if due + interval > now else next_on_grid(now)
            self.call_later(due - now, tick)

        self.call_later(interval if phase is None else due - time.time(), tick)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        self._calls.append(fn)
        os.eventfd_write(self._wake_fd, 1)

    def in_loop_thread(self) -> bool:
        return self._thread_id == threading.get_ident()

    # Loop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        self._running = False
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass

    def run(self) -> None:
        self._running = True
        self._thread_id = threading.get_ident()
        while self._running:
            if self._ready or self._calls:
                timeout = 0.0
            elif self._timers:
                timeout = max(0.0, min(self._timers[0][0] - time.monotonic(), 1.0))
            else:
                timeout = 1.0
            events = self._epoll.poll(timeout)
            for fd, _ in events:
                if fd == self._wake_fd:
                    try:
                        os.eventfd_read(self._wake_fd)
                    except BlockingIOError:
                        pass
                else:
                    self._ready[fd] = None
            while self._calls:
                self._guarded(self._calls.popleft())
            self._serve_ready()
            self._run_timers()
        self._thread_id = None

    def _serve_ready(self) -> None:
        ready, self._ready = self._ready, {}
        # One turn over thousands of busy sockets (a process simulating hosts, in a broadcast)
        # can take a second; timers wait for the turn's end, and with them every deadline and
        # every next step of a failover.  So a turn ends after _TURN_S and the sockets it did
        # not reach are served first in the next.
        give_back = time.monotonic() + _TURN_S
        fds = iter(ready)
        for fd in fds:
            entry = self._readers.get(fd)
            if entry is None:
                continue
            sock, handler = entry
            if has_input(sock):
                self._serving = fd
                if self._guarded(handler, sock):
                    self._ready[fd] = None
                self._serving = -1
                if time.monotonic() > give_back:
                    rest = dict.fromkeys(fds)
                    rest.update(self._ready)
                    self._ready = rest
                    break
        # Sends may have swallowed the FD's signal for input that is now queued.
        while self._touched:
            touched, self._touched = self._touched, {}
            for fd in touched:
                entry = self._readers.get(fd)
                if entry is not None and has_input(entry[0]):
                    self._ready[fd] = None

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, timer = heapq.heappop(timers)
            if not timer.cancelled:
                self._guarded(timer.fn)

    @staticmethod
    def _guarded(fn: Callable[..., object], *args: object) -> object:
        """Run one callback; a bug in it is logged and the loop goes on serving everything else."""
        try:
            return fn(*args)
        except Exception:
            log.exception("loop_callback_failed")
            return False

    def close(self) -> None:
        self._epoll.close()
        os.close(self._wake_fd)
