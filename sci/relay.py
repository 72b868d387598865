"""A relay: the tree's inner node.  Commands fan out through it and answers gather in it.

When a route below changes while a command is out, the relay that sees the change is the
lowest common ancestor of the old and the new path, so it sends the command again along the
new path itself; the root only replays what crosses its own children.  A relay that loses
its parent drops its open gathers: the root replays them once the relay is attached again.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import structlog
import zmq

from . import proto
from .counters import Counters
from .downlink import Downlink, DownlinkOwner
from .exceptions import SciError
from .gather import Gather
from .node import LoopNode
from .proto import Frame, Kind, NodeEntry, Role
from .reactor import Reactor, Timer, ZContext
from .results import Status
from .routes import RouteChange
from .security import Security, check_key
from .settings import TreeSettings
from .status import StatusQueries
from .uplink import Uplink, UplinkOwner

__all__ = ["Relay"]

log = structlog.get_logger("sci.relay")

_LOST = int(Status.LOST)
#: The longest a command or a status query may be given (the root's submit takes at most a
#: day).  A longer ttl from the parent is cut to it, so that the ttl passed on still packs.
_MAX_TTL_MS = 86_400_000


class Relay(UplinkOwner, DownlinkOwner, LoopNode):
    def __init__(
        self,
        node_id: str,
        registrar: str | Sequence[str],
        listen: str,
        settings: TreeSettings,
        advertise: str | None = None,
        reactor: Reactor | None = None,
        ctx: ZContext | None = None,
        security: Security | None = None,
    ) -> None:
        self.node_id = proto.check_node_id(node_id)
        self.settings = settings
        self.security = security
        self.reactor = reactor or Reactor()
        self.ctx: ZContext = ctx or zmq.Context.instance()
        self.counters = Counters(settings.counting)
        self.down = Downlink(self.reactor, self.ctx, node_id, listen, settings, self, self.counters,
                             security=security)
        self._advertise = advertise
        self.up: Uplink | None = None
        self._registrar = registrar
        self.gathers: dict[tuple[str, int], Gather] = {}
        self.status = StatusQueries(node_id, self.reactor, self.down)
        self._routes_added: list[NodeEntry] = []
        self._routes_removed: list[list[Any]] = []
        self._routes_pending: set[str] = set()
        self._route_timer: Timer | None = None
        self._kept_epoch: tuple[int, Callable[[int], None]] | None = None
        self._log = log.bind(node=node_id)

    def keep_epoch(self, known: int, save: Callable[[int], None]) -> None:
        """Before ``start``: ``Uplink.keep_epoch`` of the uplink it will make."""
        self._kept_epoch = (known, save)

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.down.start()
        endpoint = self._advertise or self.down.connect_endpoint
        self.up = Uplink(self.reactor, self.ctx, self.node_id, Role.AGENT, self._registrar, self.settings, self,
                         endpoint=endpoint, counters=self.counters, security=self.security)
        if self._kept_epoch is not None:
            self.up.keep_epoch(*self._kept_epoch)
        self.up.start()
        self._log.info("relay_started", listen=self.down.bound_endpoint, advertise=endpoint)

    def close(self) -> None:
        if self.up is not None:
            self.up.stop()
        self.down.close()
        self._log.info("relay_stopped")

    # From the parent ----------------------------------------------------------------------

    def subtree_entries(self) -> list[NodeEntry]:
        # The HELLO being built carries the whole table: what was batched so far is in it.
        # Changes from now on are batched and go up once the parent has welcomed us.
        self._routes_added.clear()
        self._routes_removed.clear()
        self._routes_pending.clear()
        return self.down.routes.entries()

    def on_attached(self, parent: str) -> None:
        self._flush_routes()

    def on_detached(self, parent: str, reason: str) -> None:
        if self.gathers:
            self._log.info("gathers_dropped", count=len(self.gathers), reason=reason)
        self.gathers.clear()
        self.status.clear()

    def on_parent_frame(self, frame: Frame) -> None:
        if frame.kind is Kind.COMMAND:
            self._dispatch(*frame.fields)
        elif frame.kind is Kind.STATUS:
            self._status_query(*frame.fields)
        else:
            self._keys(*frame.fields)

    def _keys(self, whole: int, added: dict[str, Any], removed: list[Any], signers: dict[str, Any]) -> None:
        """The enrolled keys, from the parent: kept for the ZAP check and the route claims, and
        passed on to agents below."""
        if self.security is None:
            return
        try:
            checked = {proto.check_node_id(n): check_key(k) for n, k in added.items()}
            gone = [proto.check_node_id(n) for n in removed]
            signing = {proto.check_node_id(n): check_key(k, "signing key") for n, k in signers.items()}
        except SciError as exc:
            self._log.warning("frame_dropped", reason="malformed", kind="KEYS", detail=str(exc)[:200])
            return
        keyring = self.security.keyring
        if whole:
            gone += [node for node in keyring.snapshot() if node not in checked]
            keyring.replace(checked, signing)
        else:
            for node, key in checked.items():
                keyring.add(node, key)
            for node, key in signing.items():
                keyring.add_signer(node, key)
        for node in gone:
            keyring.remove(node)
        self._log.info("keys_received", whole=bool(whole), added=len(checked), removed=len(gone),
                       signers=len(signing), total=len(keyring))
        self.down.keys_changed(bool(whole), checked, gone, signing)

    def epoch(self) -> int:
        return self.up.epoch if self.up is not None else 0

    def _dispatch(self, cmd_id: str, wave: int, op: str, body: bytes, targets: list[str] | None, ttl_ms: int,
                  epoch: int) -> None:
        if targets is not None and not all(type(t) is str for t in targets):
            self.counters.add("frames_dropped:malformed")
            self._log.warning("frame_dropped", reason="malformed", kind="COMMAND", detail="targets must be node ids")
            return
        now = time.monotonic()
        deadline = now + min(ttl_ms, _MAX_TTL_MS) / 1000
        flush_at = deadline - self.settings.hop_margin
        key = (cmd_id, wave)
        routes = self.down.routes
        shares, unroutable = routes.partition(targets)
        expected = routes.expected_for(shares)
        gather = self.gathers.get(key)
        if gather is None:
            gather = Gather(cmd_id, wave, op, body, epoch, flush_at, deadline)
            self.gathers[key] = gather
            self.reactor.call_later(max(0.0, flush_at - now), lambda: self._flush(key, gather))
        gather.pending.update(expected)
        for host in unroutable:
            gather.answers[host] = [_LOST, f"no route at relay {self.node_id}", 0]
        child_ttl = max(0, int((flush_at - now) * 1000))
        whole = None
        for child, share in shares.items():
            if share is None:
                if whole is None:
                    whole = proto.command(cmd_id, wave, op, body, None, child_ttl, epoch)
                data = whole
            else:
                data = proto.command(cmd_id, wave, op, body, share, child_ttl, epoch)
            self.down.send(child, data)
        self.counters.add("commands_relayed", len(shares))
        if gather.complete:
            self._flush(key, gather)

    def _flush(self, key: tuple[str, int], gather: Gather) -> None:
        if self.gathers.get(key) is not gather:
            return
        del self.gathers[key]
        if gather.answers:
            self._send_results(gather.cmd_id, gather.wave, gather.answers)

    def _send_results(self, cmd_id: str, wave: int, table: dict[str, list[Any]]) -> None:
        if self.up is not None:
            self.counters.add("results_relayed")
            self.up.send(lambda session: proto.results(session, cmd_id, wave, table))

    # From children ------------------------------------------------------------------------

    def on_results(self, child: str, cmd_id: str, wave: int, table: dict[str, list[Any]]) -> None:
        gather = self.gathers.get((cmd_id, wave))
        if gather is None:
            self._send_results(cmd_id, wave, table)  # late or unasked: pass up, the root decides
            return
        stray = gather.take(table)
        if stray:
            self._send_results(cmd_id, wave, stray)
        if gather.complete:
            self._flush((cmd_id, wave), gather)

    def on_notice(self, child: str, origin: str, topic: str, body: bytes) -> None:
        if self.up is not None:
            self.counters.add("notices_relayed")
            self.up.send(lambda session: proto.notice(session, origin, topic, body))

    def on_routes(self, child: str, change: RouteChange) -> None:
        if change.moved and self.gathers:
            self._repair_gathers(change)
        for entry in change.removed:
            if entry[0] in self._routes_pending:
                self._flush_routes()  # an add for this node is queued: keep the order
            self._routes_removed.append(entry)
        for entry in change.added:
            self._routes_added.append(entry)
            self._routes_pending.add(entry[0])
        if self._route_timer is None and (self._routes_added or self._routes_removed):
            self._route_timer = self.reactor.call_later(self.settings.route_batch_delay, self._flush_routes)

    def _flush_routes(self) -> None:
        if self._route_timer is not None:
            self._route_timer.cancel()
            self._route_timer = None
        if self.up is None or not self.up.attached:
            return  # kept until WELCOME; a new HELLO would carry them instead
        added, removed = self._routes_added, self._routes_removed
        if added or removed:
            self._routes_added, self._routes_removed = [], []
            self._routes_pending.clear()
            self.up.send(lambda session: proto.routes(session, added, removed))

    def _repair_gathers(self, change: RouteChange) -> None:
        """Send in-flight commands again to hosts whose route moved; mark LOST those left with none."""
        resend: dict[tuple[tuple[str, int], str], list[str]] = {}
        for node, old, new in change.moved:
            for key, gather in self.gathers.items():
                if new is None:
                    gather.lose(node, f"route lost at relay {self.node_id} (was via {old})")
                elif gather.resend(node, new):
                    resend.setdefault((key, new), []).append(node)
        now = time.monotonic()
        for (key, child), hosts in resend.items():
            gather = self.gathers[key]
            ttl = max(0, int((gather.flush_at - now) * 1000))
            self._log.info("command_rerouted", cmd=gather.cmd_id, wave=gather.wave, via=child, hosts=len(hosts))
            self.counters.add("commands_rerouted")
            self.down.send(child, proto.command(gather.cmd_id, gather.wave, gather.op, gather.body, hosts, ttl,
                                                     gather.epoch))
        for key, gather in list(self.gathers.items()):
            if gather.complete:
                self._flush(key, gather)

    # Tree status --------------------------------------------------------------------------

    def _status_query(self, query_id: str, ttl_ms: int) -> None:
        flush_in = max(0.0, min(ttl_ms, _MAX_TTL_MS) / 1000 - self.settings.hop_margin)
        self.status.start(query_id, flush_in, lambda table: self._send_status(query_id, table))

    def on_status_reply(self, child: str, query_id: str, table: dict[str, list[Any]]) -> None:
        if not self.status.reply(child, query_id, table):
            self._send_status(query_id, table)  # late: pass it up, the root decides

    def _send_status(self, query_id: str, table: dict[str, list[Any]]) -> None:
        if self.up is not None:
            self.up.send(lambda session: proto.status_reply(session, query_id, table))
