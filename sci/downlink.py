"""A node's links to its children: sessions, heartbeats, routes, and sending down.

Children connect to one ROUTER socket with their node id as routing id.  A HELLO opens a
session (a number fresh for this process); every later frame from the child must carry it.
A child declared dead loses its session and all routes through it; if it was only slow, its
next frame is refused with REJECT and it attaches again, bringing its subtree along.  So one
false alarm costs one re-attach of one link and does not spread to the nodes below it.

A child is dead when its connection is gone: libzmq drops it when the child is killed, or
stopped or cut off (its ZMTP heartbeats stop), and a send to it then fails.  So every dropped
connection is followed, ``disconnect_grace`` later (time for a live child to reconnect), by
a probe of every child.  A child whose connection stays up but whose loop sent nothing for
``heartbeat_misses`` tree heartbeats is dead too (stopped, or its loop hangs), unless most
children fell silent with it (then this parent, or the machine, is behind: only a silence
past ``silence_limit`` counts).  Never more children die in one heartbeat interval than
``dead_cap`` allows: a parent that finds many gone at once is more likely behind itself, and
says so (``self_suspect``).  Heartbeats down go every ``down_interval``, less often than the
children's up.
"""

from __future__ import annotations

import collections
import math
import socket
import time
from dataclasses import dataclass
from typing import Any

import structlog
import zmq

from . import proto
from .claims import ClaimChecker
from .counters import Counters, add_into, check_counters
from .exceptions import FrameError
from .proto import Frame, Kind, NodeEntry, RejectCode, Role
from .links import QUORUM, close_link, tune_link
from .reactor import NOBLOCK, NOBLOCK_SNDMORE, Reactor, Timer, ZContext, ZSocket, has_input
from .routes import RouteChange, RouteTable
from .security import Security, release_domain, serve_curve
from .settings import TreeSettings

__all__ = ["Child", "Downlink", "DownlinkOwner", "check_entries"]

log = structlog.get_logger("sci.downlink")

#: Longest a parent spends reading children's frames before its timers get a turn.
_READ_SLICE_S = 0.05
#: Children declared dead that are remembered, to tell a false alarm when one comes back.
_DECLARED_DEAD_KEPT = 4096
#: Deeper than any tree grows.  A claimed level past it is a peer's lie, and the registrar must
#: still be able to pack the level + 1 it gives the next node placed under that claim.
_MAX_LEVEL = 1 << 16
#: Children that may always be declared dead in one interval, however few there are.
_DEAD_FLOOR = 2


@dataclass(slots=True)
class Child:
    node_id: str
    role: Role
    session: int
    last_rx: float
    last_tx: float
    incarnation: int


class DownlinkOwner:
    def epoch(self) -> int:
        """The highest root epoch this node knows, told to each child it welcomes."""
        return 0

    def on_routes(self, child: str, change: RouteChange) -> None:
        """Routes changed below; the owner sends them up or applies them."""

    def on_results(self, child: str, cmd_id: str, wave: int, table: dict[str, list[Any]]) -> None:
        """A child's aggregate for one command."""

    def on_status_reply(self, child: str, query_id: str, table: dict[str, list[Any]]) -> None:
        """A child relay's part of a tree status query."""

    def on_notice(self, child: str, origin: str, topic: str, body: bytes) -> None:
        """A backend's notice, from ``origin`` (routed through ``child``): passed up, or handled at the root."""

    def on_join(self, downlink: "Downlink", identity: bytes, frame: Frame) -> None:
        """A JOIN reached this node; only the root's registrar takes it."""
        downlink.send_raw(identity, proto.reject(RejectCode.NOT_HERE, "this node is not a registrar"))

    def on_enrol(self, downlink: "Downlink", identity: bytes, frame: Frame, key: str | None) -> None:
        """An ENROL reached this node; only the root takes it."""
        downlink.send_raw(identity, proto.enrolled(False, "this node is not a registrar"))


def check_entries(entries: Any) -> list[NodeEntry]:
    """Validate route entries from a child; raise FrameError on the first bad one."""
    if not isinstance(entries, list):
        raise FrameError("route entries must be a list")
    for e in entries:
        if not (isinstance(e, list) and len(e) == 8):
            raise FrameError("route entry must have 8 fields")
        node, seq, parent, role, level, endpoint, groups, signature = e
        proto.check_node_id(node)
        if not (isinstance(seq, list) and len(seq) == 2 and all(type(x) is int for x in seq)):
            raise FrameError(f"route entry {node}: seq must be [int, int]")
        if (not isinstance(parent, str) or type(level) is not int or not 0 < level <= _MAX_LEVEL
                or role not in (Role.AGENT, Role.BACKEND)):
            raise FrameError(f"route entry {node}: bad parent, role or level")
        if not (endpoint is None or isinstance(endpoint, str)) or not isinstance(groups, list):
            raise FrameError(f"route entry {node}: bad endpoint or groups")
        if not all(isinstance(g, str) for g in groups):
            raise FrameError(f"route entry {node}: groups must be strings")
        if not (signature is None or type(signature) is bytes):
            raise FrameError(f"route entry {node}: the signature must be bytes")
    return entries


def _check_removals(removed: Any) -> list[list[Any]]:
    for r in removed:
        if not (isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and isinstance(r[1], list)):
            raise FrameError("route removal must be [node_id, seq]")
    return list(removed)


class Downlink:
    def __init__(
        self,
        reactor: Reactor,
        ctx: ZContext,
        node_id: str,
        listen: str,
        settings: TreeSettings,
        owner: DownlinkOwner,
        counters: Counters | None = None,
        security: Security | None = None,
        accept_unknown_keys: bool = False,
    ) -> None:
        self.reactor = reactor
        self.ctx = ctx
        self.node_id = node_id
        self.listen = listen
        self.settings = settings
        self.owner = owner
        self.children: dict[str, Child] = {}
        self.routes = RouteTable()
        #: this node's own counts (shared with its uplink) and the sum of its leaves' reports
        self.counters = counters or Counters(settings.counting)
        self.leaf_counters: dict[str, float] = {}
        #: child -> incarnation, for children this node declared dead
        self._declared_dead: dict[str, int] = {}
        self.security = security
        #: with CURVE, every route claim is checked before it is taken (sci.claims)
        self.claims = (ClaimChecker(node_id, security.keyring.sign_key_of, self.routes, self.counters)
                       if security is not None else None)
        self._whole_keys: bytes | None = None
        #: the root lets unknown keys finish the handshake so that they can enrol; relays do not
        self._accept_unknown = accept_unknown_keys
        # Sessions are unique per process lifetime, so a session number from before a restart
        # never matches by chance.
        self._next_session = time.time_ns() // 1000 % (1 << 40)
        self._sock: ZSocket | None = None
        self._monitor: ZSocket | None = None
        self._probe_timer: Timer | None = None
        #: a connection dropped after the pending probe was planned: probe once more after it
        self._probe_again = False
        #: when this node declared children dead, within the last heartbeat interval
        self._recent_deaths: collections.deque[float] = collections.deque()
        #: most children were silent at the last tick (logged once per spell)
        self._suspecting = False
        self._last_tick = 0.0
        self._stop_ticker: Any = None
        self._log = log.bind(node=node_id)
        self.bound_endpoint = ""

    def start(self) -> None:
        sock = self.ctx.socket(zmq.ROUTER)
        tune_link(sock, self.settings)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.security is not None:
            serve_curve(sock, self.ctx, self.node_id, self.security, self._peer_allowed)
        sock.bind(self.listen)
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._last_tick = time.monotonic()
        self.reactor.add_reader(sock, self._on_readable)
        self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.reactor.add_reader(self._monitor, self._on_monitor)
        self._stop_ticker = self.reactor.add_ticker(self.settings.heartbeat_interval / 4, self.tick)

    @property
    def connect_endpoint(self) -> str:
        """The bound endpoint as others can reach it: a wildcard address becomes this host's name."""
        endpoint = self.bound_endpoint
        for wildcard in ("//0.0.0.0:", "//*:", "//[::]:"):
            if wildcard in endpoint:
                return endpoint.replace(wildcard, f"//{socket.getfqdn()}:")
        return endpoint

    def _peer_allowed(self, key: str) -> bool:
        """The ZAP handler's question (in its own thread): may this key finish the handshake?"""
        keyring = self.security.keyring if self.security is not None else None
        if keyring is None:
            return True
        if keyring.node_of(key) is not None:
            return True
        return self._accept_unknown and key not in keyring.revoked

    def close(self) -> None:
        if self.security is not None:
            release_domain(self.ctx, self.node_id, self._peer_allowed)
        if self._stop_ticker is not None:
            self._stop_ticker()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        close_link(self.reactor, self._sock, self._monitor)
        self._sock = self._monitor = None

    # Sending ------------------------------------------------------------------------------

    def send_raw(self, identity: bytes, data: bytes) -> bool:
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.send(identity, NOBLOCK_SNDMORE)
            sock.send(data, NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                return False
            raise
        self.reactor.touch(sock)
        return True

    def send(self, child_id: str, data: bytes) -> bool:
        """Send to a child; a child whose connection is gone is declared dead (after this call returns)."""
        child = self.children.get(child_id)
        if child is None:
            return False
        if self.send_raw(child_id.encode(), data):
            child.last_tx = time.monotonic()
            return True
        self.reactor.call_later(0, lambda: self._connection_gone(child_id, child.session))
        return False

    # Liveness -----------------------------------------------------------------------------

    def tick(self) -> None:
        now = time.monotonic()
        forgive = now - self._last_tick > self.settings.heartbeat_interval
        if forgive:
            self._log.info("downlink_stall_forgiven", stalled_s=round(now - self._last_tick, 3))
        self._last_tick = now
        dead_after = self.settings.dead_after
        interval = self.settings.down_interval
        heartbeat = proto.heartbeat_down()
        # While frames wait unread, a child's latest heartbeat may be among them: judge no one
        # dead until this node has caught up with its input (bulk traffic must not look like silence).
        backlog = self._sock is not None and has_input(self._sock)
        silent = []
        for child in list(self.children.values()):
            if forgive:
                child.last_rx = now
            elif now - child.last_rx > dead_after and not backlog:
                silent.append(child)
                continue
            if now - child.last_tx >= interval:
                self.send(child.node_id, heartbeat)
        silent = self._beyond_doubt(silent, now)
        if silent:
            silent.sort(key=lambda c: c.last_rx)
            allowed = self._deaths_allowed(len(silent), "silent")
            for child in silent[:allowed]:
                self._child_failed(child.node_id, child.session, f"no frame for {now - child.last_rx:.1f}s")

    def _beyond_doubt(self, silent: list[Child], now: float) -> list[Child]:
        """The silent children whose silence proves their death.

        A child's silence is evidence only against children that are heard: when most of at
        least ``QUORUM`` children fell silent together, the likelier cause is that this node
        cannot hear them in time (its I/O thread starved, frames still in the kernel) or that
        the machine under them is, not that they all stopped at once.  Then only a silence
        past ``silence_limit`` (a loop that hangs) counts, and ``self_suspect`` says why.
        """
        suspect = len(self.children) >= QUORUM and 2 * len(silent) > len(self.children)
        if suspect and not self._suspecting:
            self.counters.add("self_suspects")
            self._log.warning("self_suspect", reason="most children silent", silent=len(silent),
                              children=len(self.children))
        self._suspecting = suspect
        if not suspect:
            return silent
        limit = self.settings.silence_limit
        return [child for child in silent if now - child.last_rx > limit]

    def _deaths_allowed(self, wanted: int, why: str) -> int:
        """How many of ``wanted`` children may be declared dead now, under the per-interval cap.

        Many children dying at once is less likely than this node falling behind: its loop
        (silent children whose connections are up) or its I/O thread (connections its own
        stall timed out).  Past the cap it says so and leaves the rest to later intervals.
        """
        now = time.monotonic()
        recent = self._recent_deaths
        while recent and now - recent[0] >= self.settings.heartbeat_interval:
            recent.popleft()
        cap = max(_DEAD_FLOOR, math.ceil(self.settings.dead_cap * len(self.children)))
        allowed = min(wanted, max(0, cap - len(recent)))
        if allowed < wanted:
            self.counters.add("self_suspects")
            self._log.warning("self_suspect", reason=why, dying=wanted, declaring=allowed,
                              children=len(self.children), cap=cap)
        recent.extend([now] * allowed)
        return allowed

    def _connection_gone(self, child_id: str, session: int) -> None:
        child = self.children.get(child_id)
        if child is None or child.session != session:
            return
        if self._sock is not None and has_input(self._sock):
            # Frames wait unread, and a child that left on purpose (moved by the root) said BYE
            # just before its connection closed: read them first, and look again at the probe.
            self._probe_soon()
            return
        if self._deaths_allowed(1, "connections") == 1:
            self._child_failed(child_id, session, "connection gone")
        else:
            self._probe_soon()  # still gone at the next probe: declared then, if the cap allows

    def _on_monitor(self, sock: ZSocket) -> bool:
        for i in range(64):
            if i and not has_input(sock):
                return False
            sock.recv_multipart(NOBLOCK)  # only EVENT_DISCONNECTED is asked for; whose, it does not say
            self._probe_soon()
        return True

    def _probe_soon(self) -> None:
        if self._probe_timer is None:
            self._probe_timer = self.reactor.call_later(self.settings.disconnect_grace, self._probe)
        else:
            self._probe_again = True

    def _probe(self) -> None:
        """Send to every child: a send fails, and declares the child dead, if its connection is still gone."""
        self._probe_timer = None
        if self._probe_again:
            self._probe_again = False
            self._probe_soon()
        heartbeat = proto.heartbeat_down()
        for child_id in list(self.children):
            self.send(child_id, heartbeat)

    def _child_failed(self, child_id: str, session: int, reason: str) -> None:
        child = self.children.get(child_id)
        if child is None or child.session != session:
            return
        del self.children[child_id]
        if self.claims is not None:
            self.claims.forget(child_id)
        self.counters.add("children_declared_dead")
        self._declared_dead.pop(child_id, None)
        self._declared_dead[child_id] = child.incarnation
        if len(self._declared_dead) > _DECLARED_DEAD_KEPT:
            del self._declared_dead[next(iter(self._declared_dead))]
        change = self.routes.remove_child(child_id)
        self._log.warning("child_dead", child=child_id, role=child.role.name.lower(), reason=reason,
                          routes_lost=len(change.removed))
        self.owner.on_routes(child_id, change)

    # Receiving ----------------------------------------------------------------------------

    def _on_readable(self, sock: ZSocket) -> bool:
        # The reactor saw input before calling; after that, asking EVENTS is far cheaper than
        # letting recv raise Again at the end of each burst.  Reading is bounded by time as
        # well as count: a burst of thousands of JOINs must not keep the heartbeat timers waiting.
        give_back = time.monotonic() + _READ_SLICE_S
        for i in range(self.settings.read_batch):
            if i:
                if not has_input(sock):
                    return False
                if time.monotonic() > give_back:
                    return True  # more is waiting: timers first, then the rest
            key = None
            if self.security is None:
                parts = sock.recv_multipart(NOBLOCK)
            else:
                # The sender's CURVE key, as the ZAP handler let it in, comes with each message.
                frames = sock.recv_multipart(NOBLOCK, copy=False)
                user = frames[-1].get("User-Id")
                key = user if isinstance(user, str) else None
                parts = [f.bytes for f in frames]
            if len(parts) != 2:
                self.counters.add("frames_dropped:malformed")
                self._log.warning("frame_dropped", reason="malformed", detail=f"{len(parts)} parts")
                continue
            identity, data = parts
            try:
                frame = proto.decode(data, self.settings.max_frame_bytes)
                self._on_frame(identity, frame, key)
            except FrameError as exc:
                self.counters.add(f"frames_dropped:{exc.reason}")
                self._log.warning("frame_dropped", reason=exc.reason, detail=str(exc)[:200],
                                  peer=identity[:80].decode(errors="replace"))
        return True

    def _on_frame(self, identity: bytes, frame: Frame, key: str | None = None) -> None:
        kind = frame.kind
        if kind is Kind.ENROL:
            self.owner.on_enrol(self, identity, frame, key)
            return
        if kind is Kind.JOIN or kind is Kind.HELLO:
            claimed = frame.fields[0]
            if not self._key_speaks_for(key, claimed):
                self.counters.add("frames_dropped:not_enrolled")
                self._log.warning("attach_refused", child=str(claimed)[:64], kind=kind.name, key=key,
                                  reason="key not enrolled for this node")
                self.send_raw(identity, proto.reject(RejectCode.REFUSED, f"this key is not enrolled as {claimed!r}"))
                return
            if kind is Kind.JOIN:
                self.owner.on_join(self, identity, frame)
            else:
                self._on_hello(identity, frame)
            return
        child_id = identity.decode(errors="replace")
        if not self._key_speaks_for(key, child_id):
            self.counters.add("frames_dropped:wrong_key")
            self._log.warning("frame_refused", child=child_id[:64], kind=kind.name, key=key,
                              reason="sender key is not the child's")
            return
        child = self.children.get(child_id)
        if child is None or child.session != frame.session:
            self.counters.add("frames_dropped:stale_session")
            self._log.info("stale_session_refused", child=child_id, session=frame.session, kind=kind.name)
            self.send_raw(identity, proto.reject(RejectCode.NO_SESSION, "no such session; attach again", frame.session))
            return
        child.last_rx = time.monotonic()
        if kind is Kind.HEARTBEAT:
            return
        if kind is Kind.COUNTERS:
            try:
                add_into(self.leaf_counters, check_counters(frame.fields[0]))
            except ValueError as exc:
                raise FrameError(f"COUNTERS from {child_id}: {exc}", reason="malformed") from None
            return
        if kind is Kind.RESULTS:
            cmd_id, wave, table = frame.fields
            via = self.routes.child_of
            foreign = {host for host in table if via(host) != child_id}
            if foreign:
                # A child answers only for hosts routed through it: anything else is a forgery,
                # or a late answer from a route that has since moved (the new route answers too).
                self.counters.add("frames_dropped:foreign_results")
                self._log.warning("results_refused", child=child_id, cmd=cmd_id, hosts=len(foreign),
                                  example=str(next(iter(foreign)))[:64])
                table = {host: entry for host, entry in table.items() if host not in foreign}
                if not table:
                    return
            self.owner.on_results(child_id, cmd_id, wave, table)
        elif kind is Kind.ROUTES:
            if child.role is Role.BACKEND:
                raise FrameError(f"ROUTES from backend {child_id}: a backend has no subtree")
            added, removed = frame.fields
            check_entries(added)
            removed = _check_removals(removed)
            change = self.routes.remove(child_id, removed)
            if self.claims is not None:
                self.claims.withdrawn(child_id, [r[0] for r in removed])
                added = self.claims.take(child_id, child.session, added)
            change.extend(self.routes.add(child_id, added))
            if change:
                self.owner.on_routes(child_id, change)
        elif kind is Kind.STATUS_REPLY:
            self.owner.on_status_reply(child_id, *frame.fields)
        elif kind is Kind.NOTICE:
            self._on_notice(child_id, *frame.fields)
        elif kind is Kind.BYE:
            del self.children[child_id]
            if self.claims is not None:
                self.claims.forget(child_id)
            change = self.routes.remove_child(child_id)
            self._log.info("child_left", child=child_id)
            self.owner.on_routes(child_id, change)
        else:
            raise FrameError(f"{kind.name} does not travel up", reason="malformed")

    def _on_notice(self, child_id: str, origin: str, topic: str, body: bytes) -> None:
        # Like results: a child speaks only for the hosts routed through it, so no relay can
        # make up what happened on a host below another.
        if self.routes.child_of(origin) != child_id:
            self.counters.add("frames_dropped:foreign_notice")
            self._log.warning("notice_refused", child=child_id, origin=origin[:64], reason="origin not routed here")
            return
        if not topic or len(topic) > proto.MAX_TOPIC:
            raise FrameError(f"NOTICE from {child_id}: a topic is 1 to {proto.MAX_TOPIC} characters",
                             reason="malformed")
        self.owner.on_notice(child_id, origin, topic, body)

    def _key_speaks_for(self, key: str | None, node: object) -> bool:
        return self.security is None or (self.security.keyring.node_of(key) == node)

    def keys_changed(self, whole: bool, added: dict[str, str], removed: list[str], signers: dict[str, str]) -> None:
        """Pass a keyring change on to agent children, cut off children whose key was revoked,
        and take the route claims that were waiting for a signing key that came."""
        self._whole_keys = None
        data = proto.keys(whole, added, removed, signers)
        for child in list(self.children.values()):
            if child.node_id in removed:
                self._child_failed(child.node_id, child.session, "key revoked")
            elif child.role is Role.AGENT:
                self.send(child.node_id, data)
        if self.claims is None:
            return
        changed = [*signers, *added, *removed] if not whole else None
        for child_id, entries in self.claims.keys_changed(changed).items():
            if child_id in self.children:
                change = self.routes.add(child_id, entries)
                if change:
                    self.owner.on_routes(child_id, change)

    def _on_hello(self, identity: bytes, frame: Frame) -> None:
        node_id, entries = frame.fields
        if identity != node_id.encode():
            raise FrameError(f"HELLO for {node_id!r} on a connection named {identity[:80]!r}")
        check_entries(entries)
        if not entries or entries[0][0] != node_id:
            raise FrameError("HELLO must start with the child's own route entry")
        if entries[0][3] == Role.BACKEND and len(entries) > 1:
            # A backend has no subtree: other hosts' routes through it would take their commands.
            raise FrameError(f"HELLO from backend {node_id}: a backend carries no route but its own")
        if any(e[0] == self.node_id for e in entries):
            self.send_raw(identity, proto.reject(RejectCode.REFUSED, "that would make a loop"))
            self._log.warning("attach_refused", child=node_id, reason="loop")
            return
        if self.security is not None and entries[0][2] != self.node_id:
            # The claim is signed: this node cannot correct it, and a HELLO that names another
            # parent was meant for another node (or replayed).
            named = proto.shown(entries[0][2])
            self.send_raw(identity, proto.reject(RejectCode.REFUSED,
                                                 f"the route claim names parent {named}, not {self.node_id!r}"))
            self._log.warning("attach_refused", child=node_id, reason="claim names another parent")
            return
        now = time.monotonic()
        incarnation = entries[0][1][0]
        if self._declared_dead.pop(node_id, None) == incarnation:
            # Same process as the one declared dead: it was slow or cut off, never down.
            self.counters.add("false_failures")
            self._log.warning("child_false_failure", child=node_id)
        self._next_session += 1
        old = self.children.pop(node_id, None)
        change = self.routes.remove_child(node_id) if old is not None else RouteChange()
        child = Child(node_id, Role(entries[0][3]), self._next_session, now, now, incarnation)
        self.children[node_id] = child
        if self.claims is not None:
            entries = self.claims.take(node_id, child.session, entries)
        else:
            entries[0][2] = self.node_id  # unsigned: whatever the child thought, it is ours
        change.extend(self.routes.add(node_id, entries))
        self.send_raw(identity, proto.welcome(child.session, self.owner.epoch()))
        if self.security is not None and child.role is Role.AGENT:
            if self._whole_keys is None:
                # Half a megabyte at 10,000 hosts: encoded once per change, not once per agent.
                keyring = self.security.keyring
                self._whole_keys = proto.keys(True, keyring.snapshot(), [], keyring.signers())
            self.send_raw(identity, self._whole_keys)
        self._log.info("child_attached", child=node_id, role=child.role.name.lower(), session=child.session,
                       routes=len(entries), reattach=old is not None)
        self.owner.on_routes(node_id, change)
