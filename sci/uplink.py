"""A node's link to its parent: join through the registrar, attach, heartbeat, fail over.

Lifecycle (``LinkState``)::

    JOINING --ASSIGN--> ATTACHING --WELCOME--> ATTACHED
       ^                  |   ^                   |
       |   every parent   |   |  parent dead,     |
       +---- failed ------+   +--- REJECT --------+

A parent is dead when its connection dropped and did not come back within
``disconnect_grace``, or at once when the reconnect is refused: libzmq drops it when the process is killed,
or cut off (with link heartbeats on, ``link_dead_after``).  A parent that sent nothing for
``parent_dead_after`` (two of its heartbeats down) is dead too (stopped, or its loop hangs),
unless most parents of this process fell silent with it (``links.Silences``: this process is
the one behind), and so is one that sent no WELCOME in that time.  The child then attaches to the next parent of the
ordered fallback list the registrar gave it, and asks the registrar again once the list is used up.  Attempts after the
first back off exponentially, with jitter, and every socket a process opens is paced
(``links.budget_of``), so that a storm of re-attaching nodes neither piles onto one parent
nor runs a process out of file descriptors.  Frames meant for the parent while no parent is
attached wait in an outbox and are sent, with the new session, after the next WELCOME.
"""

from __future__ import annotations

import collections
import hashlib
import random
import time
from enum import Enum
from typing import Any, Callable, Sequence

import structlog
import zmq
from zmq.utils.monitor import parse_monitor_message

from . import proto
from .counters import Counters
from .exceptions import FrameError, IllegalTransition, SciError
from .proto import Frame, Kind, NodeEntry, RejectCode, Role
from .links import budget_of, close_link, losses_of, silences_of, tune_link
from .reactor import NOBLOCK, Reactor, Timer, ZContext, ZSocket, has_input
from .security import Security, check_key, connect_curve
from .settings import TreeSettings

__all__ = ["LinkState", "Uplink", "UplinkOwner", "beat_phase"]

log = structlog.get_logger("sci.uplink")

_OUTBOX_LIMIT = 10_000
_JOIN_RETRY_MIN = 0.5
_JOIN_RETRY_MAX = 8.0
#: Delay before the second attempt in a row that did not end attached; it doubles up to the
#: maximum, and each delay is drawn between half and all of it.
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0
#: Milliseconds between a socket's tries to connect where nothing listens yet, at most.  A node
#: that was under the root retries the registrars faster: it waits there for a standby frontend
#: to take the root over, and its wait is the takeover's.  The few such nodes (the root's
#: fan-out) cost the standbys a refused connection each per try; the whole tree starting at
#: once keeps the slower pace.
_RECONNECT_MAX_MS = 1000
_ROOT_RECONNECT_MAX_MS = 200
#: How long a socket left for another parent keeps trying to deliver its BYE.
_BYE_LINGER_MS = 500
_MONITORED = (zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_HANDSHAKE_SUCCEEDED
              | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class LinkState(Enum):
    JOINING = "joining"
    ATTACHING = "attaching"
    ATTACHED = "attached"
    STOPPED = "stopped"


_TRANSITIONS: dict[LinkState, set[LinkState]] = {
    LinkState.JOINING: {LinkState.JOINING, LinkState.ATTACHING, LinkState.STOPPED},
    LinkState.ATTACHING: {LinkState.ATTACHING, LinkState.ATTACHED, LinkState.JOINING, LinkState.STOPPED},
    LinkState.ATTACHED: {LinkState.ATTACHING, LinkState.JOINING, LinkState.STOPPED},
    LinkState.STOPPED: set(),
}


def beat_phase(parent: str, interval: float) -> float:
    """Where in each heartbeat interval the children of ``parent`` send theirs (``Reactor.add_ticker``).

    The same for all of them, whatever process or host they run in, and spread over the
    interval from one parent to the next, so that the machine's load is spread too.
    """
    digest = hashlib.blake2b(parent.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32 * interval


class UplinkOwner:
    """What the node behind an uplink provides and is told.  Relays and leaves implement it."""

    def subtree_entries(self) -> list[NodeEntry]:
        """Routes below this node, sent with each HELLO (a leaf has none)."""
        return []

    def on_parent_frame(self, frame: Frame) -> None:
        """A COMMAND or STATUS frame from the parent."""

    def on_attached(self, parent: str) -> None:
        """A parent welcomed this node."""

    def on_detached(self, parent: str, reason: str) -> None:
        """The link to ``parent`` is gone; commands it was carrying may come again by replay."""


def _check_parent(parent: object) -> tuple[str, str, str | None]:
    """One [parent_id, endpoint, public key or None] of an ASSIGN; FrameError or SecurityError if not."""
    if not (type(parent) is list and len(parent) == 3 and type(parent[1]) is str):
        raise FrameError("a parent must be [node_id, endpoint, public key or None]")
    node, endpoint, key = parent
    return proto.check_node_id(node), endpoint, None if key is None else check_key(key, "parent key")


class Uplink:
    def __init__(
        self,
        reactor: Reactor,
        ctx: ZContext,
        node_id: str,
        role: Role,
        registrar: str | Sequence[str],
        settings: TreeSettings,
        owner: UplinkOwner,
        endpoint: str | None = None,
        groups: list[str] | None = None,
        counters: Counters | None = None,
        security: Security | None = None,
    ) -> None:
        self.reactor = reactor
        self.ctx = ctx
        self.node_id = proto.check_node_id(node_id)
        self.role = role
        #: where JOIN goes: every frontend that may run the root; only the one running it listens
        self.registrars = [registrar] if isinstance(registrar, str) else list(registrar)
        if not self.registrars:
            raise ValueError("an uplink needs at least one registrar endpoint")
        #: the highest root epoch seen (WELCOME, COMMAND): commands of a lower one are refused
        self.epoch = 0
        self._save_epoch: Callable[[int], None] | None = None
        self.settings = settings
        self.owner = owner
        self.endpoint = endpoint
        self.groups = list(groups or [])
        self.incarnation = time.time_ns()
        self.attach_count = 0
        self.state = LinkState.JOINING
        self.level = 0
        #: [parent_id, endpoint, public key or None] in the order to try them
        self.parents: list[tuple[str, str, str | None]] = []
        self.parent_index = 0
        self.session = 0
        self.last_rx = 0.0
        self.last_tx = 0.0
        self._phase_started = 0.0
        self._join_retry = _JOIN_RETRY_MIN
        self._join_due = 0.0
        #: attempts in a row that did not end attached for a heartbeat interval: the backoff
        self._failures = 0
        self._attached_at = 0.0
        #: the next step of the phase, when it waits (backoff, or the socket budget)
        self._pending: Timer | None = None
        #: when the connection to the parent went down, while it is down
        self._disconnected_at: float | None = None
        self._grace_timer: Timer | None = None
        #: set when the parent refused our key during ATTACHING: retry that parent at the next tick
        self._key_refused = False
        self._last_tick = 0.0
        #: how often the uplink ticks now, and how to stop that ticker (``_retick``)
        self._tick_period = 0.0
        self._stop_ticker: Callable[[], None] | None = None
        self._sock: ZSocket | None = None
        self._monitor: ZSocket | None = None
        self._outbox: collections.deque[Callable[[int], bytes]] = collections.deque()
        self.counters = counters or Counters(settings.counting)
        self.security = security
        #: the parent this node lost and when, until it is attached again
        self._lost: tuple[str, float] | None = None
        self._log = log.bind(node=node_id)
        #: read on every tick of every uplink (thousands in a process simulating hosts)
        self._parent_dead_after = settings.parent_dead_after

    # Public -------------------------------------------------------------------------------

    @property
    def parent(self) -> str | None:
        if self.state in (LinkState.ATTACHING, LinkState.ATTACHED) and self.parents:
            return self.parents[self.parent_index][0]
        return None

    @property
    def attached(self) -> bool:
        return self.state is LinkState.ATTACHED

    def own_entry(self) -> NodeEntry:
        """This node's route claim for the parent it is attaching to, signed under CURVE."""
        entry = [
            self.node_id,
            [self.incarnation, self.attach_count],
            self.parent or "",
            int(self.role),
            self.level,
            self.endpoint,
            self.groups,
            None,
        ]
        return self.security.signer.sign(entry) if self.security is not None else entry

    def start(self) -> None:
        self._retick()
        self._join()

    def send(self, build: Callable[[int], bytes]) -> None:
        """Send a frame up, built with the session in force when it actually leaves."""
        if self.state is LinkState.ATTACHED and not self._outbox:
            if self._send_now(build(self.session)):
                return
        if len(self._outbox) >= _OUTBOX_LIMIT:
            self._outbox.popleft()
            self._log.warning("uplink_outbox_overflow", limit=_OUTBOX_LIMIT)
        self._outbox.append(build)

    def stop(self, say_bye: bool = True) -> None:
        if self.state is LinkState.STOPPED:
            return
        if say_bye and self.state is LinkState.ATTACHED:
            self._send_now(proto.bye(self.session))
        self._move(LinkState.STOPPED)
        self._cancel_pending()
        self._close_socket()

    def _retick(self) -> None:
        """Tick as the state needs: on its parent's beat while attached, four times as often before.

        An attached link's duties (its heartbeat, judging its parent's silence) need one tick
        per heartbeat interval, and falling on the parent's beat, with every sibling, is what
        lets the parent read all their heartbeats at once.  Joining and attaching step on
        deadlines a fraction of a second apart.
        """
        if self._stop_ticker is not None:
            self._stop_ticker()
            self._stop_ticker = None
        interval = self.settings.heartbeat_interval
        if self.state is LinkState.STOPPED:
            return
        if self.state is LinkState.ATTACHED and self.parent is not None:
            self._tick_period = interval
            self._stop_ticker = self.reactor.add_ticker(interval, self.tick, beat_phase(self.parent, interval))
        else:
            self._tick_period = interval / 4
            self._stop_ticker = self.reactor.add_ticker(interval / 4, self.tick)
        self._last_tick = time.monotonic()

    def tick(self) -> None:
        """Called by the reactor's ticker (``_retick``)."""
        now = time.monotonic()
        if now - self._last_tick > self.settings.heartbeat_interval + self._tick_period:
            # This process was not running (SIGSTOP, swap, a long pause): the silence was ours,
            # not the parent's, so give it a fresh chance rather than cry wolf.
            self._log.info("uplink_stall_forgiven", stalled_s=round(now - self._last_tick, 3))
            self.last_rx = now
            self._phase_started = now
            if self._disconnected_at is not None:
                self._disconnected_at = now
        self._last_tick = now
        state = self.state
        if state is LinkState.ATTACHED:
            silence = now - self.last_rx
            if (silence > self._parent_dead_after and not self._backlog() and self._may_judge(now, silence)
                    and self._may_lose()):
                self._parent_failed(f"no frame for {silence:.1f}s")
                return
            if self._outbox:
                self._flush_outbox()
            # A frame sent in the last half interval will do; then the next beat is due at most
            # one and a half intervals after it.
            if now - self.last_tx >= self.settings.heartbeat_interval / 2:
                self._send_now(proto.heartbeat_up(self.session))
            if self._failures and now - self._attached_at >= self.settings.heartbeat_interval:
                self._failures = 0
        elif self._pending is not None:
            return  # backing off, or waiting for the socket budget: no deadline runs
        elif state is LinkState.ATTACHING:
            # As long as a silent parent is given: a loaded parent's CURVE handshake and WELCOME
            # may lag, and giving up on it starts the same attempt over at the next one.
            if now - self._phase_started > self.settings.parent_dead_after:
                self._parent_failed("no WELCOME")
            elif self._key_refused:
                self._retry_attach()
        elif state is LinkState.JOINING and now >= self._join_due:
            self._join_retry = min(self._join_retry * 2, _JOIN_RETRY_MAX)
            self._send_join()

    def _may_judge(self, now: float, silence: float) -> bool:
        """Whether a silence says more about the parent than about this process.

        Not while most uplinks of this process hear nothing either (``links.Silences``): that
        is this process starved, or the machine, and leaving every parent at once would only
        add a storm of re-attaches to it.  A silence past ``silence_limit`` counts regardless.
        """
        return (silence > self.settings.silence_limit
                or not silences_of(self.reactor).most_silent(now, self.settings.parent_dead_after))

    def _backlog(self) -> bool:
        """Unread frames from the parent wait: its silence may be only our lag."""
        return self._sock is not None and has_input(self._sock)

    # Phases -------------------------------------------------------------------------------

    def _move(self, new: LinkState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"uplink {self.state.value} -> {new.value}")
        if new is LinkState.ATTACHED:
            silences_of(self.reactor).members.add(self)
        elif self.state is LinkState.ATTACHED:
            silences_of(self.reactor).members.discard(self)
        was_attached = self.state is LinkState.ATTACHED
        self.state = new
        if was_attached != (new is LinkState.ATTACHED) or new is LinkState.STOPPED:
            self._retick()

    def _backoff(self) -> float:
        """The delay before the next attempt: none after one failure, then doubling with jitter."""
        if self._failures <= 1:
            return 0.0
        return min(_BACKOFF_MAX, _BACKOFF_MIN * 2.0 ** (self._failures - 2)) * random.uniform(0.5, 1.0)

    def _later(self, delay: float, step: Callable[[], None]) -> None:
        """Run the phase's next step after ``delay``; it replaces any step still waiting.

        A step due now runs now: in a process serving thousands of busy links one turn of its
        loop can take a second, and a failover waiting a turn per step would take several.
        """
        self._cancel_pending()
        if delay <= 0:
            step()
            return

        def run() -> None:
            self._pending = None
            step()

        self._pending = self.reactor.call_later(delay, run)

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _join(self) -> None:
        self._move(LinkState.JOINING)
        self._later(self._backoff(), self._send_join)

    def _send_join(self) -> None:
        """JOIN on one socket connected to every registrar, a copy queued for each.

        ZeroMQ deals the copies out one per connection, and keeps a copy for an address where
        nothing listens yet until something does: the frontend that takes over the root gets
        its copy as soon as it binds, with no rotation through the others' timeouts.
        """
        self._join_due = time.monotonic() + self._join_retry * random.uniform(0.75, 1.25)
        if not self._open(self.registrars, None, self.security.root_key if self.security else None,
                          self._send_join, _ROOT_RECONNECT_MAX_MS if self.level == 1 else _RECONNECT_MAX_MS):
            return
        join = proto.join(self.node_id, self.role, self.incarnation, self.endpoint, self.groups,
                          self.security.signer.public if self.security is not None else None)
        for _ in self.registrars:
            self._send_now(join)
        self._log.debug("join_sent", registrars=self.registrars)

    def _attach(self, index: int, reuse: bool = False) -> None:
        """Attach to ``parents[index]``: on the socket already open to it if ``reuse``."""
        self._move(LinkState.ATTACHING)
        self.parent_index = index
        self.attach_count += 1
        self._later(self._backoff(), lambda: self._hello_phase(reuse))

    def _hello_phase(self, reuse: bool) -> None:
        # The WELCOME deadline runs from the HELLO, not from the start of the backoff before it.
        self._phase_started = time.monotonic()
        self._send_hello(reuse)

    def _send_hello(self, reuse: bool) -> None:
        parent_id, endpoint, key = self.parents[self.parent_index]
        if not (reuse and self._sock is not None) and not self._open(
                endpoint, self.node_id.encode(), key, lambda: self._send_hello(False)):
            return
        entries = [self.own_entry(), *self.owner.subtree_entries()]
        self._send_now(proto.hello(self.node_id, entries))
        self._log.info("attach_sent", parent=parent_id, endpoint=endpoint, fallback=self.parent_index,
                       routes=len(entries), reused=reuse)

    def _retry_attach(self) -> None:
        """Say HELLO to the same parent again, on a fresh connection, within the same deadline.

        The root tells a relay about a new key at the moment it tells the new node where to
        attach, so the node's handshake can beat the relay's copy of its key by a hair.  The
        refused HELLO never reached the parent, so sending it again cannot make two sessions;
        giving up on the parent instead would leave the node on a fallback for good.
        """
        self._log.info("attach_retried", parent=self.parents[self.parent_index][0], reason="key refused")
        self._send_hello(reuse=False)

    def _parent_failed(self, reason: str) -> None:
        parent = self.parent or "?"
        was_attached = self.state is LinkState.ATTACHED
        self._log.warning("parent_lost", parent=parent, reason=reason)
        if was_attached:
            self._detached_from(parent)
            self.owner.on_detached(parent, reason)
        self._failures += 1
        self._close_socket()
        nxt = self.parent_index + 1
        if nxt < len(self.parents):
            self._attach(nxt)
        else:
            self._join()

    # Sockets ------------------------------------------------------------------------------

    def _open(self, endpoint: str | list[str], identity: bytes | None, server_key: str | None,
              retry: Callable[[], None], reconnect_max_ms: int = _RECONNECT_MAX_MS) -> bool:
        """A fresh socket to ``endpoint`` (or to each of a list); False if there is none yet (``retry`` runs later)."""
        self._close_socket()
        wait = budget_of(self.reactor).take()
        if wait > 0:
            self._later(wait, retry)
            return False
        try:
            sock = self.ctx.socket(zmq.DEALER)
        except zmq.ZMQError as exc:  # out of file descriptors or of libzmq's sockets: wait, do not spin
            self.counters.add("sockets_refused")
            self._log.warning("socket_open_failed", endpoint=str(endpoint)[:200], error=str(exc)[:200])
            self._failures += 1
            self._later(max(self._backoff(), _BACKOFF_MIN), retry)
            return False
        tune_link(sock, self.settings)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, reconnect_max_ms)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        try:
            if self.security is not None:
                # Without the parent's key there is no handshake to make: the attempt fails and
                # the next parent is tried, rather than talking to an unauthenticated peer.
                connect_curve(sock, self.security, server_key or "")
            for address in [endpoint] if isinstance(endpoint, str) else endpoint:
                sock.connect(address)
            monitor = sock.get_monitor_socket(_MONITORED) if identity is not None else None
        except zmq.ZMQError as exc:
            # No key, or an endpoint ZeroMQ cannot use, or no file descriptor for the monitor:
            # no socket, so the phase times out and the next parent (or the registrar) is tried.
            sock.close(linger=0)
            self._log.warning("connect_failed", endpoint=str(endpoint)[:200], error=str(exc)[:200])
            return False
        self._sock = sock
        self._key_refused = False
        self.reactor.add_reader(sock, self._on_readable)
        if monitor is not None:
            self._monitor = monitor
            self.reactor.add_reader(monitor, self._on_monitor)
        return True

    def _close_socket(self, linger_ms: int = 0) -> None:
        self._disconnected_at = None
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        close_link(self.reactor, self._sock, self._monitor, linger_ms)
        self._sock = self._monitor = None

    def _send_now(self, data: bytes) -> bool:
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.send(data, NOBLOCK)
        except zmq.Again:
            self._log.warning("uplink_backpressure")
            return False
        self.last_tx = time.monotonic()
        self.reactor.touch(sock)
        return True

    def _flush_outbox(self) -> None:
        outbox = self._outbox
        while outbox and self.state is LinkState.ATTACHED:
            if not self._send_now(outbox[0](self.session)):
                return
            outbox.popleft()

    def _on_monitor(self, sock: ZSocket) -> bool:
        for i in range(64):
            if i and not has_input(sock):
                return False
            event = parse_monitor_message(sock.recv_multipart(NOBLOCK))["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                # Not EVENT_CONNECTED: a stopped process's kernel still accepts TCP connections.
                self._disconnected_at = None
            elif event == zmq.EVENT_DISCONNECTED:
                self._link_down()
            elif event == zmq.EVENT_CONNECT_RETRIED:
                # A reconnect refused: nothing listens at the parent's address any more.  A live
                # parent too loaded to accept drops the handshake, it does not refuse it, so
                # there is no use waiting out the grace (a third of the recovery after a kill).
                self._link_down(refused=True)
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and self.state is LinkState.ATTACHING:
                self._key_refused = True
        return True

    def _link_down(self, refused: bool = False) -> None:
        now = time.monotonic()
        if refused:
            self._disconnected_at = min(self._disconnected_at or now, now - self.settings.disconnect_grace)
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            self._grace_timer = self.reactor.call_later(0, self._grace_over)
        elif self._disconnected_at is None:
            self._disconnected_at = now
            if self._grace_timer is None:
                self._grace_timer = self.reactor.call_later(self.settings.disconnect_grace, self._grace_over)

    def _grace_over(self) -> None:
        """The connection went down ``disconnect_grace`` ago: the parent is dead unless it came back."""
        self._grace_timer = None
        if self._monitor is not None and has_input(self._monitor):
            self._on_monitor(self._monitor)  # a busy loop may not have read that it did
        since = self._disconnected_at
        if since is None or self.state not in (LinkState.ATTACHED, LinkState.ATTACHING):
            return
        left = since + self.settings.disconnect_grace - time.monotonic()
        if left > 0 or self._pending is not None or not self._may_lose():
            # Forgiven after a stall of ours, a HELLO waits, or this process is losing too many
            # parents at once to believe them all dead: look again later.
            self._grace_timer = self.reactor.call_later(max(left, self.settings.disconnect_grace),
                                                        self._grace_over)
            return
        self._parent_failed("connection lost")

    def _may_lose(self) -> bool:
        """Whether this process may give up on one more parent now (see ``links.LOSSES_PER_S``)."""
        if losses_of(self.reactor).take() == 0:
            return True
        self.counters.add("self_suspects")
        self._log.warning("self_suspect", parent=self.parent, reason="too many parents lost at once")
        return False

    def _on_readable(self, sock: ZSocket) -> bool:
        # The reactor saw input before calling; after that, asking EVENTS is far cheaper than
        # letting recv raise Again at the end of each burst.
        for i in range(self.settings.read_batch):
            if i and not has_input(sock):
                return False
            data = sock.recv(NOBLOCK)
            try:
                frame = proto.decode(data, self.settings.max_frame_bytes)
            except FrameError as exc:
                self.counters.add(f"frames_dropped:{exc.reason}")
                self._log.warning("frame_dropped", reason=exc.reason, detail=str(exc), peer="parent")
                continue
            self._on_frame(frame)
            if self._sock is not sock:  # the frame made us switch parents
                return False
        return True

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.kind
        state = self.state
        if state is LinkState.JOINING:
            if kind is Kind.ASSIGN:
                self._on_assign(frame)
            elif kind is Kind.REJECT:
                self._log.warning("join_refused", text=frame.fields[1])
            else:
                self._dropped("unexpected", kind=kind.name, state=state.value)
            return
        self.last_rx = time.monotonic()
        if kind is Kind.COMMAND or kind is Kind.STATUS:
            if state is LinkState.ATTACHED:
                if kind is Kind.COMMAND and not self._current(frame.fields[6], frame.fields[0]):
                    return
                self.owner.on_parent_frame(frame)
            else:
                self._dropped("not_attached", kind=kind.name)
        elif kind is Kind.HEARTBEAT:
            pass
        elif kind is Kind.WELCOME:
            self._on_welcome(*frame.fields)
        elif kind is Kind.REJECT:
            self._on_reject(*frame.fields)
        elif kind is Kind.KEYS:
            if state is LinkState.ATTACHED:
                self.owner.on_parent_frame(frame)
        else:
            self._dropped("unexpected", kind=kind.name, state=state.value)

    def _dropped(self, reason: str, **detail: object) -> None:
        self.counters.add(f"frames_dropped:{reason}")
        self._log.warning("frame_dropped", reason=reason, **detail)

    def _detached_from(self, parent: str) -> None:
        # Timed from the last frame the parent sent, so detection counts too, and kept across
        # failed attempts, so it runs until the next WELCOME however many fallbacks were tried.
        if self._lost is None:
            self._lost = (parent, self.last_rx)

    def _on_assign(self, frame: Frame) -> None:
        level, parents = frame.fields
        try:
            checked = [_check_parent(p) for p in parents]
        except SciError as exc:
            self._dropped("malformed", kind="ASSIGN", detail=str(exc))
            return
        if not checked:
            self._dropped("malformed", kind="ASSIGN", detail="no parents")
            return
        self.level = level
        self.parents = checked
        self._join_retry = _JOIN_RETRY_MIN
        self._log.info("assigned", level=level, parents=[p[0] for p in checked])
        self._close_socket()
        self._attach(0)

    def move_to(self, level: int, parents: list[Any]) -> bool:
        """Leave the parent for ``parents[0]`` because the root rebalances the tree: BYE, then
        attach as after an ASSIGN (a parent that does not take it leads on to the fallbacks).
        False if there is nothing to do (not attached, or there already) or the list is bad."""
        try:
            checked = [_check_parent(p) for p in parents]
        except SciError as exc:
            self._dropped("malformed", kind="move", detail=str(exc))
            return False
        if self.state is not LinkState.ATTACHED or not checked or checked[0][0] == self.parent:
            return False
        parent = self.parent or "?"
        self._send_now(proto.bye(self.session))
        self._log.info("moving", parent=parent, to=checked[0][0])
        self._detached_from(parent)
        self.owner.on_detached(parent, "moved by the root")
        self.level = level
        self.parents = checked
        # The BYE must reach the old parent: without it, a batch of children leaving at once
        # looks to it like a mass failure (and its dead-cap would call it its own).
        self._close_socket(linger_ms=_BYE_LINGER_MS)
        self._attach(0)
        return True

    def keep_epoch(self, known: int, save: Callable[[int], None]) -> None:
        """Start from the highest epoch this node saw before it restarted, and ``save`` each higher one.

        Without it a restarted node would take commands from any root, a paused former leader's
        included, until the current one welcomed it.
        """
        self.epoch = max(self.epoch, known)
        self._save_epoch = save

    def _raise_epoch(self, epoch: int) -> None:
        self._log.info("root_epoch_raised", epoch=epoch, previous=self.epoch)
        self.epoch = epoch
        if self._save_epoch is not None:
            try:
                self._save_epoch(epoch)
            except OSError as exc:  # the node still fences in memory; it would forget on a restart
                self._log.error("root_epoch_not_saved", epoch=epoch, reason=str(exc))

    def _current(self, epoch: int, cmd_id: str) -> bool:
        """Whether a command comes from the current root: its epoch is not below the highest seen."""
        if epoch < self.epoch:
            self.counters.add("commands_refused:stale_epoch")
            self._log.warning("command_refused_stale_epoch", cmd=cmd_id, epoch=epoch, current=self.epoch,
                              parent=self.parent)
            return False
        if epoch > self.epoch:
            self._raise_epoch(epoch)
        return True

    def _on_welcome(self, session: int, epoch: int) -> None:
        if self.state is not LinkState.ATTACHING:
            return
        if epoch < self.epoch:
            # Its commands will be refused; the parent is on a replaced root and will leave it.
            self._log.warning("attached_under_stale_epoch", parent=self.parent, epoch=epoch, current=self.epoch)
        elif epoch > self.epoch:
            self._raise_epoch(epoch)
        self._move(LinkState.ATTACHED)
        self.session = session
        self.last_rx = self._attached_at = time.monotonic()
        parent = self.parents[self.parent_index][0]
        self._log.info("attached", parent=parent, session=session, fallback=self.parent_index)
        if self._lost is not None:
            lost_parent, since = self._lost
            self._lost = None
            if parent != lost_parent:
                took = time.monotonic() - since
                self.counters.add("reparents")
                self.counters.add("reparent_seconds", took)
                self._log.info("reparented", parent=parent, previous=lost_parent, took_s=round(took, 3))
        self._flush_outbox()
        self.owner.on_attached(parent)

    def _on_reject(self, code: int, text: str, session: int) -> None:
        if code == RejectCode.NO_SESSION and (self.state is not LinkState.ATTACHED or session != self.session):
            return  # refuses a session we have already replaced
        self._log.warning("rejected", parent=self.parent, code=code, text=text)
        if self.state is LinkState.ATTACHED:
            self._detached_from(self.parent or "?")
            self.owner.on_detached(self.parent or "?", f"rejected: {text}")
        if code == RejectCode.NO_SESSION:
            # The parent is alive and the connection fine; it just forgot us.  Say HELLO again
            # on the same socket, after a backoff: a parent that forgot many children at once
            # gets their HELLOs spread out instead of in one burst.
            self._failures = max(self._failures + 1, 2)
            self._attach(self.parent_index, reuse=True)
        else:
            self._parent_failed(f"refused: {text}")
