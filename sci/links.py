"""What every connection of the tree is set up with, and how fast one process may open them.

Where ``link_heartbeat_interval`` is set, libzmq's own ZMTP heartbeats (PING/PONG) run in its
I/O threads, which keep going while the Python loop is busy or descheduled, and a stopped
(SIGSTOP) or cut-off peer loses its connection within ``link_dead_after``.  They are off by
default (``TreeSettings.link_heartbeat_interval``); the tree's own heartbeats do that job.
"""

from __future__ import annotations

import time
import weakref
from typing import Protocol

import structlog
import zmq

from .reactor import Reactor, ZSocket
from .settings import TreeSettings

__all__ = ["Budget", "Listener", "QUORUM", "Silences", "budget_of", "close_link", "losses_of", "silences_of",
           "tune_link"]

log = structlog.get_logger("sci.links")

#: New uplink sockets one process (one reactor) may open per second, and at once.  A process
#: simulating thousands of hosts that all re-attach together would otherwise open sockets
#: (each with its monitor) faster than libzmq's reaper closes the old ones, and run out of
#: file descriptors; spread out, the storm also spares the parents it lands on.
OPENS_PER_S = 500.0
OPENS_BURST = 500.0
#: Parents one process may give up on per second for a dropped connection or silence, and at
#: once.  Enough for every host under a killed agent to fail over at once; when thousands of a
#: process's links drop together, the likelier cause is this process (its I/O thread starved)
#: and a mass re-attach would only spread the overload.
LOSSES_PER_S = 16.0
LOSSES_BURST = 64.0
#: Fewest peers a node must hear from before their silences are weighed together: with fewer,
#: one silent peer is as likely the others' lag as its own death.
QUORUM = 4
#: How long a count of silent uplinks is reused: every uplink of a process asks in the same
#: tick, and thousands of them must not each count thousands.
_RECOUNT_S = 0.05


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def tune_link(sock: ZSocket, settings: TreeSettings) -> None:
    """Buffers, limits and ZMTP heartbeats, for either end of a link."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.MAXMSGSIZE, settings.max_frame_bytes * 2)
    if settings.link_heartbeat_interval:
        # Both ends PING: each end's timeout is what catches a peer that stopped answering.  No
        # TTL: it would only repeat that on the other side, and each of its timers costs libzmq
        # a scan of every timer of the I/O thread (thousands in a process that simulates hosts).
        sock.setsockopt(zmq.HEARTBEAT_IVL, _ms(settings.link_heartbeat_interval))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _ms(settings.link_timeout))


def close_link(reactor: Reactor, sock: ZSocket | None, monitor: ZSocket | None, linger_ms: int = 0) -> None:
    """Stop reading ``sock`` and its ``monitor`` and close both at once (by default with LINGER
    0): a link's end never leaks a file descriptor, whichever path closes it.  ``linger_ms``
    gives what was just sent (a BYE) that long to leave."""
    if monitor is not None:
        reactor.remove_reader(monitor)
        if sock is not None:
            sock.disable_monitor()
        monitor.close(linger=0)
    if sock is not None:
        reactor.remove_reader(sock)
        sock.close(linger=linger_ms)


class Budget:
    """A token bucket."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    def take(self) -> float:
        """0 if one may happen now (and it is counted), else the seconds until one may."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


_opens: weakref.WeakKeyDictionary[Reactor, Budget] = weakref.WeakKeyDictionary()
_losses: weakref.WeakKeyDictionary[Reactor, Budget] = weakref.WeakKeyDictionary()


def budget_of(reactor: Reactor) -> Budget:
    """Socket openings of every uplink served by ``reactor`` (one thread of one process)."""
    budget = _opens.get(reactor)
    if budget is None:
        budget = _opens[reactor] = Budget(OPENS_PER_S, OPENS_BURST)
    return budget


def losses_of(reactor: Reactor) -> Budget:
    """Parents given up by the uplinks served by ``reactor``."""
    budget = _losses.get(reactor)
    if budget is None:
        budget = _losses[reactor] = Budget(LOSSES_PER_S, LOSSES_BURST)
    return budget


class Listener(Protocol):
    #: when the link last carried a frame from the peer (monotonic seconds)
    last_rx: float


class Silences:
    """The attached uplinks one reactor serves, to weigh one parent's silence against the others'.

    When most of a process's parents fell silent at once, the likelier cause is the process
    itself (its loop or its I/O thread starved of CPU) than that they all stopped together.
    """

    def __init__(self) -> None:
        self.members: set[Listener] = set()
        self._counted_at = -1.0
        self._most = False

    def most_silent(self, now: float, after: float) -> bool:
        """Whether more than half of at least ``QUORUM`` members heard nothing for ``after`` seconds."""
        if len(self.members) < QUORUM:
            return False
        if now - self._counted_at >= _RECOUNT_S:
            self._counted_at = now
            silent = sum(now - m.last_rx > after for m in self.members)
            most = 2 * silent > len(self.members)
            if most and not self._most:
                log.warning("self_suspect", reason="most parents silent", silent=silent, links=len(self.members))
            self._most = most
        return self._most


_silences: weakref.WeakKeyDictionary[Reactor, Silences] = weakref.WeakKeyDictionary()


def silences_of(reactor: Reactor) -> Silences:
    """The attached uplinks served by ``reactor``."""
    silences = _silences.get(reactor)
    if silences is None:
        silences = _silences[reactor] = Silences()
    return silences
