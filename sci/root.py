"""The tree's root: the registrar that places joining nodes, and the API that sends commands.

``TreeRoot`` runs its loop in a thread of its own; every public method is safe to call from
any other thread.  A command's fate per host::

    SENT --answer--> final (OK / ERROR)
     |  ^
     |  +-- route back (replay, new wave) --+
     v                                      |
    WAITING (route broke) ------------------+--- grace over --> UNREACHABLE
    deadline: SENT -> TIMEOUT, WAITING -> UNREACHABLE

Every host gets exactly one final result; answers that come twice (a replay and the
original both made it) are counted and dropped here, and the backends' journals make sure
the command itself ran once.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import structlog
import zmq

from . import proto
from .counters import Counters
from .downlink import Downlink, DownlinkOwner
from .exceptions import FrameError, TargetError, TreeClosed
from .planner import Placement, Planner
from .proto import Frame, NodeEntry, RejectCode, Role
from .reactor import Reactor, Timer, ZContext
from .results import Result, Status
from .routes import RouteChange
from .security import Security, SecurityError, check_key
from .settings import TreeSettings
from .status import StatusQueries
from .topology import TreeIndex

__all__ = ["Targets", "CommandHandle", "NodeCounters", "NodeInfo", "NodeStatus", "RootStats", "TreeEvent",
           "TreeReport", "TreeRoot"]

log = structlog.get_logger("sci.root")

_SENT = 0
_WAITING = 1
#: Tree events kept for ``drain_events`` callers; older ones are dropped if no one drains them.
_EVENTS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Targets:
    """Whom a command goes to: every backend, a list of hosts, or a named group."""

    kind: str
    hosts: tuple[str, ...] = ()
    group: str = ""

    @classmethod
    def all(cls) -> "Targets":
        return cls("all")

    @classmethod
    def to(cls, *hosts: str) -> "Targets":
        if not hosts:
            raise TargetError("a host list needs at least one host")
        for host in hosts:
            try:
                proto.check_node_id(host)
            except FrameError as exc:
                raise TargetError(f"targets: {exc}") from None
        return cls("hosts", tuple(dict.fromkeys(hosts)))

    @classmethod
    def named(cls, group: str) -> "Targets":
        if not group:
            raise TargetError("a group needs a name")
        return cls("group", group=group)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    role: str
    parent: str
    level: int
    groups: tuple[str, ...]
    up: bool


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    role: str  # root | agent | backend
    parent: str | None
    level: int
    children: int
    #: seconds since the parent last heard from it (None for the root, or if not reported)
    heartbeat_age: float | None
    #: up | suspect (heard from longer ago than two heartbeat intervals) | down |
    #: silent (an agent that did not answer the status query)
    state: str


@dataclass(frozen=True, slots=True)
class NodeCounters:
    """What one relay (or the root) counted itself, and the sum its leaves reported to it."""

    node_id: str
    role: str  # root | agent
    counters: dict[str, float]
    leaves: dict[str, float]


@dataclass(frozen=True, slots=True)
class TreeReport:
    nodes: list[NodeStatus]
    counters: list[NodeCounters]


@dataclass(frozen=True, slots=True)
class TreeEvent:
    """A change of the tree's shape as the root saw it."""

    kind: str  # joined | lost | returned (same parent) | reparented
    node_id: str
    role: str  # agent | backend
    parent: str | None
    previous_parent: str | None
    #: seconds between the route going away and coming back (0 if it moved in one step)
    unreachable_s: float
    at: float = field(default_factory=time.time)


@dataclass(slots=True)
class RootStats:
    commands: int = 0
    replays: int = 0
    duplicates_dropped: int = 0
    late_results: int = 0
    joins: int = 0
    reparents: int = 0
    #: hosts the root told to move to a parent with room (sci.rebalance)
    moves: int = 0


class CommandHandle:
    """A submitted command.  Results arrive from the root's thread; read them from any thread."""

    def __init__(self, cmd_id: str, op: str) -> None:
        self.id = cmd_id
        self.op = op
        self.submitted = time.monotonic()
        self._cond = threading.Condition()
        self._targets: list[str] | None = None
        self._results: dict[str, Result] = {}
        self._arrival: dict[str, float] = {}
        self._done = False
        self._callbacks: list[Callable[["CommandHandle"], None]] = []

    @property
    def targets(self) -> list[str]:
        with self._cond:
            while self._targets is None:
                self._cond.wait()
            return list(self._targets)

    def done(self) -> bool:
        with self._cond:
            return self._done

    def latency(self, host: str) -> float | None:
        """Seconds from submit to this host's final result reaching the root."""
        return self._arrival.get(host)

    def results(self, timeout: float | None = None) -> Iterator[tuple[str, Result]]:
        """Yield (host, result) as they arrive, until every target has one."""
        end = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            with self._cond:
                while len(self._results) == seen and not self._done:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"command {self.id} still running")
                    self._cond.wait(left)
                batch = list(itertools.islice(self._results.items(), seen, None))
                finished = self._done
            seen += len(batch)
            yield from batch
            if finished and seen == len(self._results):
                return

    def wait(self, timeout: float | None = None) -> dict[str, Result]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"command {self.id} still running")
            return dict(self._results)

    def add_done_callback(self, fn: Callable[["CommandHandle"], None]) -> None:
        """``fn(handle)`` once the command is over (in the root's thread, or now if it is)."""
        with self._cond:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    # Loop side

    def _set_targets(self, targets: list[str]) -> None:
        with self._cond:
            self._targets = targets
            self._cond.notify_all()

    def _deliver(self, batch: list[tuple[str, Result]]) -> None:
        now = time.monotonic() - self.submitted
        with self._cond:
            for host, result in batch:
                self._results[host] = result
                self._arrival[host] = now
            self._cond.notify_all()

    def _finish(self) -> None:
        with self._cond:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        for fn in callbacks:
            fn(self)


@dataclass(slots=True)
class _Command:
    handle: CommandHandle
    op: str
    body: bytes
    deadline: float
    #: host -> [state, child sent through, since (monotonic), reason]
    pending: dict[str, list[Any]] = field(default_factory=dict)
    wave: int = 0
    waiting: int = 0
    timer: Timer | None = None


class TreeRoot(DownlinkOwner):
    def __init__(
        self,
        listen: str,
        settings: TreeSettings | None = None,
        node_id: str = "root",
        advertise: str | None = None,
        ctx: ZContext | None = None,
        security: Security | None = None,
    ) -> None:
        self.node_id = proto.check_node_id(node_id)
        self.settings = (settings or TreeSettings()).validate()
        self.security = security
        self.reactor = Reactor()
        self.ctx: ZContext = ctx or zmq.Context.instance()
        self.counters = Counters(self.settings.counting)
        self.down = Downlink(self.reactor, self.ctx, node_id, listen, self.settings, self, self.counters,
                             security=security, accept_unknown_keys=True)
        self._advertise = advertise
        #: the fencing token every COMMAND carries; set before start by whoever runs the root
        self.root_epoch = 0
        self.planner: Planner | None = None
        self.stats = RootStats()
        self._commands: dict[str, _Command] = {}
        self._nodes: dict[str, NodeEntry] = {}
        self._index = TreeIndex(self.settings.fanout)
        self._down_since: dict[str, float] = {}
        self._groups: dict[str, set[str]] = {}
        self._events: collections.deque[TreeEvent] = collections.deque(maxlen=_EVENTS_KEPT)
        self.status = StatusQueries(node_id, self.reactor, self.down)
        #: the latest tree report asked for: when it started, and the report (or the query in flight)
        self._report: tuple[float, concurrent.futures.Future[TreeReport]] | None = None
        self._report_lock = threading.Lock()
        #: the enroller asks the database, which may wait on a lock for seconds: it runs on this
        #: thread (one, so enrolments keep their order), never on the tree's own
        self._enrolments: concurrent.futures.ThreadPoolExecutor | None = None
        #: signing keys bound since the last KEYS push (sent once per loop turn, not per JOIN)
        self._signers_unsent: dict[str, str] = {}
        #: the batch of hosts being moved (sci.rebalance) and the command that moves them
        self._moving: dict[str, None] = {}
        self._move_cmd: CommandHandle | None = None
        #: called with (origin host, topic, body) for each backend's notice, set before start by
        #: whoever runs the root; on a thread of its own (one: notices keep their order), as it
        #: may write to a database
        self.notice_handler: Callable[[str, str, Any], None] | None = None
        self._notices: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._log = log.bind(node=node_id)

    # Lifecycle ----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Where nodes join (the configured advertised address, else the bound one)."""
        return self._advertise or self.down.connect_endpoint

    @property
    def running(self) -> bool:
        """Started, not stopped, and its thread alive (a crashed loop counts as not running)."""
        return not self._closed and self._thread is not None and self._thread.is_alive()

    def start(self) -> "TreeRoot":
        self.down.start()
        self.planner = Planner(self.node_id, self.endpoint, self._index.loads)
        self.reactor.add_ticker(self.settings.heartbeat_interval / 4, self._expire_waiting)
        if self.settings.rebalance_interval:
            self.reactor.add_ticker(self.settings.rebalance_interval, self._rebalance)
        self._thread = threading.Thread(target=self.reactor.run, name="sci-root", daemon=True)
        self._thread.start()
        self._log.info("root_started", listen=self.down.bound_endpoint, advertise=self.endpoint,
                       fanout=self.settings.fanout)
        return self

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pool in (self._enrolments, self._notices):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self.reactor.call_soon_threadsafe(self._abort_all)
        self.reactor.call_soon_threadsafe(self.reactor.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.down.close()
        self.reactor.close()
        self._log.info("root_stopped")

    def __enter__(self) -> "TreeRoot":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn`` in the root's thread and return its value."""
        if self._closed:
            raise TreeClosed("the tree root is stopped")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

        self.reactor.call_soon_threadsafe(run)
        return future.result(timeout)

    # Public API ---------------------------------------------------------------------------

    def submit(self, op: str, args: Any = None, targets: Targets | None = None, timeout: float = 30.0,
               cmd_id: str | None = None) -> CommandHandle:
        """Send ``op(args)`` to ``targets`` (default: every backend); returns at once.

        ``cmd_id`` lets a caller that journals its commands send one again after a restart:
        backends that already ran it answer from their record.
        """
        if self._closed:
            raise TreeClosed("the tree root is stopped")
        if not isinstance(op, str) or not op or len(op) > 128:
            raise TargetError("op must be a non-empty string of at most 128 characters")
        if not 0 < timeout <= 86400:
            raise TargetError("timeout must be between 0 and 86400 seconds")
        cmd_id = cmd_id or uuid.uuid4().hex
        body = proto.pack_body(args)
        handle = CommandHandle(cmd_id, op)
        cmd = _Command(handle, op, body, time.monotonic() + timeout)
        spec = targets or Targets.all()
        self.reactor.call_soon_threadsafe(lambda: self._start(cmd, spec))
        return handle

    def nodes(self) -> list[NodeInfo]:
        def collect() -> list[NodeInfo]:
            routes = self.down.routes
            return [
                NodeInfo(n, Role(e[3]).name.lower(), e[2], e[4], tuple(e[6]), n in routes)
                for n, e in self._nodes.items()
            ]
        return list(self._call(collect))

    def attached(self, node: str) -> bool:
        """Whether ``node`` has a route now.  Read outside the reactor, so a hint: the route may go or
        come the next moment, which a command's own result then tells."""
        return node in self.down.routes

    def define_group(self, name: str, hosts: list[str]) -> None:
        """Name a set of hosts for multicast (besides the groups backends declare themselves)."""
        Targets.to(*hosts)
        self._call(lambda: self._groups.__setitem__(name, set(hosts)))

    def tree_status(self, timeout: float = 2.0, max_age: float = 0.0) -> list[NodeStatus]:
        """Ask every relay for its children and their heartbeat ages; return the whole tree."""
        return self.tree_report(timeout, max_age).nodes

    def tree_report(self, timeout: float = 2.0, max_age: float = 0.0) -> TreeReport:
        """One status query of every relay: the tree's nodes and every relay's counters.

        At 10,000 hosts a query costs a status frame per relay and half a second at the root,
        so callers that accept a report up to ``max_age`` seconds old (counted from when its
        query started) share: they get the last report, or wait for the query in flight.  With
        ``max_age`` 0 the report is of a query started after the call.
        """
        with self._report_lock:
            now = time.monotonic()
            latest = self._report
            shared = None
            if latest is not None and max_age > 0:
                started, last = latest
                if not last.done() or (now - started <= max_age and last.exception() is None):
                    shared = last
            if shared is None:
                future: concurrent.futures.Future[TreeReport] = concurrent.futures.Future()
                self._report = (now, future)
        if shared is not None:
            return shared.result(timeout + 5)
        try:
            report = self._query_report(timeout)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(report)
        return report

    def _query_report(self, timeout: float) -> TreeReport:
        future: concurrent.futures.Future[dict[str, list[Any]]] = concurrent.futures.Future()
        self._call(lambda: self.status.start(uuid.uuid4().hex, timeout, future.set_result))
        table = future.result(timeout + 5)
        return self._call(lambda: self._compose_report(table))  # type: ignore[no-any-return]

    def enrolled(self, node_id: str, key: str) -> None:
        """Let ``node_id`` in with ``key`` (its owner checked an enrolment some other way)."""
        proto.check_node_id(node_id)
        check_key(key)
        self._call(lambda: self._set_key(node_id, key))

    def revoke(self, node_id: str) -> bool:
        """Cut ``node_id`` off: its key is refused from now on, here and at every agent.
        False if it had no key."""
        return bool(self._call(lambda: self._drop_key(node_id)))

    def _set_key(self, node_id: str, key: str) -> None:
        assert self.security is not None, "enrolment needs a root with CURVE security"
        self.security.keyring.add(node_id, key)
        self.down.keys_changed(False, {node_id: key}, [], {})

    def _drop_key(self, node_id: str) -> bool:
        if self.security is None or self.security.keyring.remove(node_id) is None:
            return False
        self._signers_unsent.pop(node_id, None)
        self.down.keys_changed(False, {}, [node_id], {})
        self._log.warning("node_revoked", revoked=node_id)
        return True

    def on_notice(self, child: str, origin: str, topic: str, body: bytes) -> None:
        handler = self.notice_handler
        self.counters.add("notices_received")
        if handler is None:
            return
        try:
            what = proto.unpack_body(body)
        except FrameError as exc:
            self.counters.add("frames_dropped:malformed")
            self._log.warning("notice_dropped", origin=origin, topic=topic, reason=str(exc)[:200])
            return
        if self._notices is None:
            self._notices = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="notices")

        def handle() -> None:
            try:
                handler(origin, topic, what)
            except Exception:  # one notice the handler cannot take must not stop the next
                self._log.exception("notice_handler_failed", origin=origin, topic=topic)

        self._notices.submit(handle)

    def on_enrol(self, downlink: Downlink, identity: bytes, frame: Frame, key: str | None) -> None:
        node_id, role_code, token = frame.fields
        security = self.security
        if security is None or security.enroller is None or key is None:
            downlink.send_raw(identity, proto.enrolled(False, "this tree does not enrol nodes"))
            return
        try:
            proto.check_node_id(node_id)
            refused = None if role_code in (Role.AGENT, Role.BACKEND) else "bad role"
        except FrameError as exc:
            refused = str(exc)
        if refused is not None:
            self._enrolment_decided(downlink, identity, str(node_id), role_code, key, refused)
            return
        enroller = security.enroller

        def decide() -> None:
            try:
                verdict = enroller(node_id, role_code, token, key)
            except Exception:  # the database away, say: the node is told, and may try again
                self._log.exception("enroller_failed", joiner=node_id)
                verdict = "the root could not check the token just now; try again"
            if not self._closed:
                self.reactor.call_soon_threadsafe(
                    lambda: self._enrolment_decided(downlink, identity, node_id, role_code, key, verdict))

        self._key_worker().submit(decide)

    def _enrolment_decided(self, downlink: Downlink, identity: bytes, node_id: str, role_code: int, key: str,
                           refused: str | None) -> None:
        if refused is not None:
            self._log.warning("enrolment_refused", joiner=node_id[:64], key=key, reason=refused)
            downlink.send_raw(identity, proto.enrolled(False, refused))
            return
        self._set_key(node_id, key)
        self._log.info("node_enrolled", joiner=node_id, role=Role(role_code).name.lower(), key=key)
        downlink.send_raw(identity, proto.enrolled(True, "enrolled"))

    @property
    def commands_in_flight(self) -> int:
        return len(self._commands)

    def drain_events(self) -> list[TreeEvent]:
        """Tree events since the last call, oldest first."""
        def take() -> list[TreeEvent]:
            events = list(self._events)
            self._events.clear()
            return events
        return self._call(take)  # type: ignore[no-any-return]

    def wait_for_hosts(self, count: int, timeout: float = 60.0) -> None:
        """Block until at least ``count`` backends are attached (for start-up and tests)."""
        end = time.monotonic() + timeout
        while self._call(self.down.routes.backend_count) < count:
            if time.monotonic() > end:
                raise TimeoutError(f"only {self._call(self.down.routes.backend_count)} of {count} hosts joined")
            time.sleep(0.05)

    # Registrar ----------------------------------------------------------------------------

    def on_join(self, downlink: Downlink, identity: bytes, frame: Frame) -> None:
        node_id, role_code, _incarnation, endpoint, groups, sign_key = frame.fields
        proto.check_node_id(node_id)
        if role_code not in (Role.AGENT, Role.BACKEND) or node_id == self.node_id:
            raise FrameError(f"JOIN from {node_id!r}: bad role or id")
        role = Role(role_code)
        if role is Role.AGENT and not endpoint:
            raise FrameError(f"JOIN from agent {node_id!r} without an endpoint")
        refused = self._bind_signer(node_id, sign_key)
        if refused is not None:
            self._log.warning("join_refused", joiner=node_id, reason=refused)
            downlink.send_raw(identity, proto.reject(RejectCode.REFUSED, refused))
            return
        assert self.planner is not None
        own_level = None
        exclude = None
        if role is Role.AGENT and self._index.children_of(node_id):
            # A relay coming back with a subtree keeps its level and never goes below itself.
            own_level = self._nodes[node_id][4] if node_id in self._nodes else None
            exclude = self._index.subtree_of(node_id)
        placement = self.planner.place(node_id, role, own_level, exclude)
        downlink.send_raw(identity, proto.assign(placement.level, self._parents_with_keys(placement)))
        self.stats.joins += 1
        self._log.info("node_placed", joiner=node_id, role=role.name.lower(), level=placement.level,
                       parents=[p[0] for p in placement.parents])

    def _bind_signer(self, node_id: str, sign_key: str | None) -> str | None:
        """Know ``node_id``'s route-signing key from its JOIN: None if it is (now) known, else
        why the JOIN is refused.

        Only the node's enrolled CURVE key can send its JOIN, so the token that enrolled that
        key vouches for the signing key it brings; once known, it never changes but with a new
        CURVE key (a new enrolment).
        """
        security = self.security
        if security is None:
            return None
        held = security.keyring.sign_key_of(node_id)
        if held is not None and held == sign_key:
            return None
        if sign_key is None:
            return "no route-signing key in the JOIN (a node older than signed routes?)"
        if held is not None:
            return "the route-signing key is not the one on record for this node; enrol it again"
        try:
            check_key(sign_key, "route-signing key")
        except SecurityError as exc:
            return str(exc)
        security.keyring.add_signer(node_id, sign_key)
        self._log.info("signer_bound", joiner=node_id, sign_key=sign_key)
        if not self._signers_unsent:
            self.reactor.call_later(0, self._push_signers)
        self._signers_unsent[node_id] = sign_key
        keeper = security.signer_keeper
        curve_key = security.keyring.key_of(node_id)
        if keeper is not None and curve_key is not None:
            def keep() -> None:
                try:
                    keeper(node_id, curve_key, sign_key)
                except Exception:  # kept in memory; the node's next JOIN after a restart binds it again
                    self._log.exception("signer_keep_failed", joiner=node_id)

            self._key_worker().submit(keep)
        return None

    def _key_worker(self) -> concurrent.futures.ThreadPoolExecutor:
        """The one thread where the owner's enroller and signer keeper wait on the database."""
        if self._enrolments is None:
            self._enrolments = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="enrol")
        return self._enrolments

    def _push_signers(self) -> None:
        batch, self._signers_unsent = self._signers_unsent, {}
        if batch:
            self.down.keys_changed(False, {}, [], batch)

    def _parents_with_keys(self, placement: Placement) -> list[list[str | None]]:
        """A placement's parents as ASSIGN (and a move) name them: each with the key to expect from it."""
        return [[*p, self._public_key(p[0])] for p in placement.parents]

    def _public_key(self, node: str) -> str | None:
        """The key a child must expect from ``node`` when it attaches to it."""
        if self.security is None:
            return None
        if node == self.node_id:
            return self.security.keypair.public
        return self.security.keyring.key_of(node)

    # Commands -----------------------------------------------------------------------------

    def _resolve(self, spec: Targets) -> list[str]:
        if spec.kind == "all":
            return [n for n, e in self._nodes.items() if e[3] == Role.BACKEND]
        if spec.kind == "hosts":
            return list(spec.hosts)
        members = set(self._groups.get(spec.group, ()))
        members.update(n for n, e in self._nodes.items() if e[3] == Role.BACKEND and spec.group in e[6])
        return sorted(members)

    def _start(self, cmd: _Command, spec: Targets) -> None:
        hosts = self._resolve_and_register(cmd, spec)
        if hosts is None:
            return
        now = time.monotonic()
        routes = self.down.routes
        final: list[tuple[str, Result]] = []
        routed: list[str] = []
        for host in hosts:
            entry = self._nodes.get(host)
            if entry is None:
                final.append((host, Result(Status.UNREACHABLE, message="unknown host")))
            elif entry[3] != Role.BACKEND:
                final.append((host, Result(Status.UNREACHABLE, message="not a backend (commands run on backends)")))
            elif routes.child_of(host) is not None:
                routed.append(host)
            elif (since := self._down_since.get(host)) is not None and now - since < self.settings.reattach_grace:
                cmd.pending[host] = [_WAITING, None, since, "route lost"]
                cmd.waiting += 1
            else:
                final.append((host, Result(Status.UNREACHABLE, message="host is down")))
        if final:
            cmd.handle._deliver(final)
        everything = spec.kind == "all" and len(routed) == routes.backend_count()
        shares, _ = routes.partition(None if everything else routed)
        for host, child in routes.expected_for(shares).items():
            cmd.pending[host] = [_SENT, child, now, ""]
        self._send(cmd, shares)
        if not cmd.pending:
            self._finish(cmd)
        else:
            cmd.timer = self.reactor.call_later(max(0.0, cmd.deadline - now), lambda: self._expire(cmd))

    def _resolve_and_register(self, cmd: _Command, spec: Targets) -> list[str] | None:
        handle = cmd.handle
        if handle.id in self._commands:
            handle._set_targets([])
            handle._deliver([])
            handle._finish()
            self._log.error("command_id_in_use", cmd=handle.id)
            return None
        hosts = self._resolve(spec)
        handle._set_targets(hosts)
        self._commands[handle.id] = cmd
        self.stats.commands += 1
        self._log.info("command_sent", cmd=handle.id, op=cmd.op, targets=spec.kind, hosts=len(hosts))
        return hosts

    def _send(self, cmd: _Command, shares: dict[str, list[str] | None]) -> None:
        if not shares:
            return
        ttl = max(0, int((cmd.deadline - time.monotonic()) * 1000))
        cmd.wave += 1
        epoch = self.root_epoch
        whole = None
        for child, share in shares.items():
            if share is None:
                if whole is None:
                    whole = proto.command(cmd.handle.id, cmd.wave, cmd.op, cmd.body, None, ttl, epoch)
                data = whole
            else:
                data = proto.command(cmd.handle.id, cmd.wave, cmd.op, cmd.body, share, ttl, epoch)
            self.down.send(child, data)

    def epoch(self) -> int:
        return self.root_epoch

    def on_results(self, child: str, cmd_id: str, wave: int, table: dict[str, list[Any]]) -> None:
        cmd = self._commands.get(cmd_id)
        if cmd is None:
            self.stats.late_results += len(table)
            self._log.info("results_refused", cmd=cmd_id, hosts=len(table), reason="no such command in flight")
            return
        pending = cmd.pending
        delivered: list[tuple[str, Result]] = []
        now = time.monotonic()
        for host, entry in table.items():
            state = pending.get(host)
            if state is None:
                self.stats.duplicates_dropped += 1
                continue
            result = Result.from_wire(entry)
            if result.status is Status.LOST:
                if state[0] == _SENT and state[1] == child:
                    state[:] = [_WAITING, None, now, result.message]
                    cmd.waiting += 1
                continue
            if state[0] == _WAITING:
                cmd.waiting -= 1
            del pending[host]
            delivered.append((host, result))
        if delivered:
            cmd.handle._deliver(delivered)
        if not pending:
            self._finish(cmd)

    def on_routes(self, child: str, change: RouteChange) -> None:
        now = time.monotonic()
        self._index.removed(change.removed)
        self._index.added(change.added)
        for node, _seq in change.removed:
            self._down_since[node] = now
        for entry in change.added:
            node = entry[0]
            previous = self._nodes.get(node)
            lost_at = self._down_since.pop(node, None)
            self._nodes[node] = entry
            if self.planner is not None:
                self.planner.attached(node)
            self._note_attached(entry, previous, lost_at, now)
        for node, _seq in change.removed:
            last = self._nodes.get(node)
            # A host the root is moving left its parent on purpose: it is on its way, not lost.
            if self._down_since.get(node) == now and last is not None and node not in self._moving:
                self._events.append(TreeEvent("lost", node, Role(last[3]).name.lower(), None, last[2], 0.0))
        if not self._commands or not change.moved:
            return
        replay: dict[tuple[str, str], list[str]] = {}
        for node, old, new in change.moved:
            for cmd in self._commands.values():
                state = cmd.pending.get(node)
                if state is None:
                    continue
                if new is None:
                    if state[0] == _SENT and state[1] == old:
                        state[:] = [_WAITING, None, now, f"route lost (via {old})"]
                        cmd.waiting += 1
                elif state[0] == _WAITING or state[1] != new:
                    if state[0] == _WAITING:
                        cmd.waiting -= 1
                    state[:] = [_SENT, new, now, ""]
                    replay.setdefault((cmd.handle.id, new), []).append(node)
        for (cmd_id, via), hosts in replay.items():
            cmd = self._commands[cmd_id]
            self.stats.replays += len(hosts)
            self._send(cmd, {via: hosts})
            self._log.info("command_replayed", cmd=cmd_id, wave=cmd.wave, via=via, hosts=len(hosts))

    def _note_attached(self, entry: NodeEntry, old: NodeEntry | None, lost_at: float | None, now: float) -> None:
        node, parent, role = entry[0], entry[2], Role(entry[3]).name.lower()
        unreachable = now - lost_at if lost_at is not None else 0.0
        if old is None:
            self._events.append(TreeEvent("joined", node, role, parent, None, 0.0))
        elif old[2] != parent:
            self.stats.reparents += 1
            self._events.append(TreeEvent("reparented", node, role, parent, old[2], unreachable))
        elif lost_at is not None and lost_at < now:
            self._events.append(TreeEvent("returned", node, role, parent, old[2], unreachable))

    def _rebalance(self) -> None:
        """Move hosts off parents that carry more than the fan-out (a failed agent's orphans on
        their fallbacks, the root included) and off the root while an agent has room, to the
        agents with room, ``rebalance_batch`` at a time.  A move is the host's own re-attach
        (``MOVE_OP``): its commands in flight are replayed along the new route like any other's,
        so none is lost or run twice, and the host is away only between its BYE and its HELLO."""
        if self._move_cmd is not None and not self._move_cmd.done():
            return
        self._moving.clear()
        planner = self.planner
        assert planner is not None
        fanout = self.settings.fanout
        index = self._index
        room = index.loads.room()
        if not room:
            return
        movers: dict[str, None] = {}
        for parent in index.crowded(fanout):
            excess = index.children_of(parent) - fanout
            # The newest first: the orphans that came last, not the parent's own.
            movers.update(dict.fromkeys(index.backend_children(parent)[::-1][:excess]))
        movers.update(dict.fromkeys(index.backend_children(self.node_id)))
        plans: dict[str, list[Any]] = {}
        for host in list(movers)[:min(room, self.settings.rebalance_batch)]:
            placement = planner.place(host, Role.BACKEND)
            target = placement.parents[0][0]
            if target in (self.node_id, index.parent_of(host)):
                planner.attached(host)  # no better place: give the slot back
                continue
            plans[host] = [placement.level, self._parents_with_keys(placement)]
        if not plans:
            return
        handle = CommandHandle(uuid.uuid4().hex, proto.MOVE_OP)
        timeout = self.settings.parent_dead_after * 2
        self._moving = dict.fromkeys(plans)
        self._move_cmd = handle
        self.stats.moves += len(plans)
        self._log.info("hosts_moving", hosts=len(plans), crowded=len(index.crowded(fanout)),
                       example=next(iter(plans)), to=plans[next(iter(plans))][1][0][0])
        self._start(_Command(handle, proto.MOVE_OP, proto.pack_body(plans), time.monotonic() + timeout),
                    Targets.to(*plans))

    def _expire_waiting(self) -> None:
        grace = self.settings.reattach_grace
        now = time.monotonic()
        for cmd in list(self._commands.values()):
            if not cmd.waiting:
                continue
            failed = [(h, s) for h, s in cmd.pending.items() if s[0] == _WAITING and now - s[2] >= grace]
            for host, _ in failed:
                del cmd.pending[host]
            cmd.waiting -= len(failed)
            cmd.handle._deliver([(h, Result(Status.UNREACHABLE, message=f"host is down: {s[3]}, not attached "
                                                                         f"again within {grace:g}s"))
                                 for h, s in failed])
            if not cmd.pending:
                self._finish(cmd)

    def _expire(self, cmd: _Command) -> None:
        if self._commands.get(cmd.handle.id) is not cmd:
            return
        batch = []
        for host, state in cmd.pending.items():
            if state[0] == _SENT:
                batch.append((host, Result(Status.TIMEOUT, message="no answer before the deadline")))
            else:
                batch.append((host, Result(Status.UNREACHABLE, message=f"host is down: {state[3]}, not attached "
                                                                       "again before the deadline")))
        cmd.pending.clear()
        cmd.waiting = 0
        cmd.handle._deliver(batch)
        self._log.warning("command_deadline", cmd=cmd.handle.id, op=cmd.op, missing=len(batch))
        self._finish(cmd)

    def _finish(self, cmd: _Command) -> None:
        self._commands.pop(cmd.handle.id, None)
        if cmd.timer is not None:
            cmd.timer.cancel()
        results = cmd.handle._results
        failed = sum(1 for r in results.values() if r.status is not Status.OK)
        self._log.info("command_done", cmd=cmd.handle.id, op=cmd.op, hosts=len(results), failed=failed,
                       duration_s=round(time.monotonic() - cmd.handle.submitted, 4))
        cmd.handle._finish()

    def _abort_all(self) -> None:
        for cmd in list(self._commands.values()):
            cmd.handle._deliver([(h, Result(Status.UNREACHABLE, message="tree root stopped")) for h in cmd.pending])
            cmd.pending.clear()
            self._finish(cmd)

    # Tree status --------------------------------------------------------------------------

    def on_status_reply(self, child: str, query_id: str, table: dict[str, list[Any]]) -> None:
        self.status.reply(child, query_id, table)

    def _compose_report(self, table: dict[str, list[Any]]) -> TreeReport:
        parent_of: dict[str, str] = {}
        age_of: dict[str, float] = {}
        for node, (kids, _counters, _leaves) in table.items():
            for kid, _role, age_ms in kids:
                parent_of[kid] = node
                age_of[kid] = age_ms / 1000
        suspect_after = self.settings.heartbeat_interval * 2
        routes = self.down.routes
        out = [NodeStatus(self.node_id, "root", None, 0, len(table[self.node_id][0]), None, "up")]
        for node, entry in sorted(self._nodes.items(), key=lambda kv: (kv[1][4], kv[0])):
            role = Role(entry[3])
            up = node in routes
            age = age_of.get(node)
            if not up:
                state = "down"
            elif role is Role.AGENT and node not in table:
                state = "silent"
            elif age is not None and age > suspect_after:
                state = "suspect"
            else:
                state = "up"
            out.append(NodeStatus(node, role.name.lower(), parent_of.get(node, entry[2] if up else None), entry[4],
                                  len(table[node][0]) if node in table else 0, age, state))
        counters = [NodeCounters(node, "root" if node == self.node_id else "agent", own, leaves)
                    for node, (_kids, own, leaves) in sorted(table.items())]
        return TreeReport(out, counters)
