"""Keeping the hypervisors table in step with the tree: who joined, who is up, what each can hold.

Every ``interval`` seconds the monitor compares the tree's backends with the table: new ones
are registered, those whose state changed are marked up or down (with an event), and hosts
whose capacity is unknown or stale are asked for it with the ``info`` op, in one command.
The scheduler chooses only hosts that are up and whose capacity is known.  Changes of the
tree's shape the root saw (agents lost and back, nodes moved to another parent) become
events too.  Each round also sends their whole network state to hosts that missed a sync and
are attached again, and wakes the tasks parked for hosts that are back.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable

import structlog
from sqlalchemy import select, update

from sci import Targets, TreeEvent, TreeRoot

from .bootstrap import admin_org_id
from .db import Database
from .db.models import Event, Hypervisor, Zone, utcnow
from .netconverge import HostNetworks
from .periodic import Periodic
from .tasks import Submit

__all__ = ["HostMonitor"]

log = structlog.get_logger("frontend.hosts")

#: seconds between refreshes of up hosts' last_seen_at, and between checks for stale capacity facts
LAST_SEEN_S = 30.0
#: How old a tree status may be for a view or a scrape.  One query costs the tree a frame per
#: relay, and the heartbeat ages it reports only move once a heartbeat anyway.
TREE_VIEW_MAX_AGE_S = 1.0
FACTS_CHECK_S = 60.0

MB = 1 << 20
GB = 1 << 30


class HostMonitor(Periodic):
    name = "hosts"

    def __init__(self, db: Database, tree: TreeRoot, submit: Submit, host_networks: HostNetworks | None,
                 interval: float = 2.0, facts_every: float = 600.0, startup_grace: float = 30.0,
                 wake: Callable[[Callable[[str], bool]], int] | None = None) -> None:
        super().__init__(interval)
        self.db = db
        self.tree = tree
        #: runs again the tasks parked for hosts that are attached (TaskEngine.wake)
        self.wake = wake
        #: commands go through the frontend's counted submit, not the root's own
        self.submit = submit
        self.host_networks = host_networks
        self.facts_every = dt.timedelta(seconds=facts_every)
        self.startup_grace = startup_grace
        # After a frontend restart or a takeover, hosts take a few heartbeats to find the new
        # root; until then a host missing from the tree is not yet a host that is down.  Counted
        # from start(): a standby builds its monitor long before it leads.
        self._grace_until = time.monotonic() + startup_grace
        # What the table says of each host (name -> up | down), so that a quiet round, the common
        # case at 10,000 hosts, touches the database only when a refresh falls due.
        self._known: dict[str, str] | None = None
        self._last_seen_written = 0.0
        self._facts_checked = 0.0

    def start(self) -> None:
        now = time.monotonic()
        self._grace_until = now + self.startup_grace
        # A new leader's first seconds go to its first commands (a takeover is timed to the first
        # one answered), not to chores: the hosts' last_seen waits for its next due round.
        self._last_seen_written = now
        super().start()

    def run_once(self) -> None:
        tree = self.tree
        events = tree.drain_events()
        self._record_tree_events(events)
        seen = {n.node_id: n.up for n in tree.nodes() if n.role == "backend"}
        came_up = self._record_states(seen)
        if came_up or time.monotonic() - self._facts_checked >= FACTS_CHECK_S:
            self._facts_checked = time.monotonic()
            self._refresh_facts([name for name, up in seen.items() if up])
        if self.host_networks is not None:
            # A new session of a backend: it may have missed network changes (or restarted).
            self.host_networks.rejoined(sorted({e.node_id for e in events if e.role == "backend"
                                                   and e.kind in ("joined", "returned")}))
            self.host_networks.catch_up(tree.attached)
        if self.wake is not None:
            self.wake(tree.attached)

    def _record_tree_events(self, events: list[TreeEvent]) -> None:
        """Events for reparents, and for agents coming and going (hosts' up and down come from
        ``_record_states``, which also knows the table)."""
        rows = []
        for e in events:
            if e.kind == "reparented":
                waited = f" after {e.unreachable_s:.1f}s unreachable" if e.unreachable_s else ""
                rows.append((f"{'host' if e.role == 'backend' else 'agent'}.reparented", e.node_id,
                             f"{e.node_id} moved from {e.previous_parent} to {e.parent}{waited}"))
            elif e.role == "agent" and e.kind == "lost":
                rows.append(("agent.down", e.node_id, f"agent {e.node_id} is gone from under {e.previous_parent}"))
            elif e.role == "agent" and e.kind in ("joined", "returned"):
                rows.append(("agent.up", e.node_id, f"agent {e.node_id} is attached under {e.parent}"))
        if not rows:
            return
        admin = admin_org_id(self.db)
        with self.db.transaction() as session:
            for kind, node, message in rows:
                session.add(Event(org_id=admin, kind=kind, host=node, resource_type="tree_node", message=message))
        log.info("tree_events_recorded", count=len(rows))

    def _record_states(self, seen: dict[str, bool]) -> bool:
        """Write what changed (and, every LAST_SEEN_S, who is still up); whether any host came up."""
        if self._known is None:
            with self.db.read() as session:
                self._known = {name: status for name, status in
                               session.execute(select(Hypervisor.name, Hypervisor.status)).all()}
        in_grace = time.monotonic() < self._grace_until
        wanted = {name: "up" if up else "down" for name, up in seen.items()
                  if up or name in self._known}  # joined but not attached yet: registered once it is up
        if not in_grace:
            wanted.update({name: "down" for name, status in self._known.items()
                           if name not in seen and status == "up"})
        changed = {name: state for name, state in wanted.items() if self._known.get(name) != state}
        refresh_due = time.monotonic() - self._last_seen_written >= LAST_SEEN_S
        if not changed and not refresh_due:
            return False
        self._write_states(changed, [name for name, up in seen.items() if up] if refresh_due else [])
        self._known.update(changed)
        if refresh_due:
            self._last_seen_written = time.monotonic()
        return any(state == "up" for state in changed.values())

    def _write_states(self, changed: dict[str, str], alive: list[str]) -> None:
        now = utcnow()
        admin = admin_org_id(self.db)
        with self.db.transaction() as session:
            rows = {h.name: h for h in session.execute(select(Hypervisor).where(Hypervisor.name.in_(changed)))
                    .scalars()} if changed else {}
            for name, state in changed.items():
                host = rows.get(name)
                if host is None:
                    session.add(Hypervisor(name=name, org_id=admin, status=state, last_seen_at=now))
                    session.add(Event(org_id=admin, kind="host.joined", host=name, resource_type="hypervisor",
                                      message=f"{name} joined the tree"))
                    log.info("host_registered", host=name)
                else:
                    self._change(session, host, state, admin)
            if alive:
                # Only the stale ones, so a quiet 10,000-host cloud does not rewrite every row each round.
                stale = now - dt.timedelta(seconds=LAST_SEEN_S)
                session.execute(update(Hypervisor).where(Hypervisor.name.in_(alive), Hypervisor.last_seen_at < stale)
                                .values(last_seen_at=now).execution_options(synchronize_session=False))

    @staticmethod
    def _change(session: Any, host: Hypervisor, state: str, admin: str) -> None:
        host.status = state
        if state == "up":
            host.last_seen_at = utcnow()
        session.add(Event(org_id=admin, kind=f"host.{state}", host=host.name, resource_type="hypervisor",
                          resource_id=host.id, message=f"{host.name} is {state}"))
        log.info("host_state_changed", host=host.name, state=state)

    def _refresh_facts(self, up: list[str]) -> None:
        if not up:
            return
        stale_before = utcnow() - self.facts_every
        # The few stale rows, then those up among them: not a query naming 10,000 hosts.
        with self.db.read() as session:
            stale_rows = session.execute(select(Hypervisor.name).where(
                (Hypervisor.facts_at.is_(None)) | (Hypervisor.facts_at < stale_before))).scalars()
            stale = sorted(set(stale_rows) & set(up))
        if not stale:
            return
        table = self.submit("info", {}, Targets.to(*stale), 10.0, None).wait(20.0)
        with self.db.transaction() as session:
            for name, result in table.items():
                if not result.ok or not isinstance(result.payload, dict):
                    log.info("host_facts_missing", host=name, status=result.status.name, message=result.message)
                    continue
                host = session.execute(select(Hypervisor).where(Hypervisor.name == name)).scalar_one_or_none()
                if host is not None:
                    self._apply_facts(session, host, result.payload)

    def _apply_facts(self, session: Any, host: Hypervisor, facts: dict[str, Any]) -> None:
        host.vcpus = int(facts.get("cpus", 0))
        host.memory_mb = int(facts.get("memory_total", 0)) // MB
        host.disk_gb = int(facts.get("disk_total", 0)) // GB
        host.facts, host.facts_at = facts, utcnow()
        zone_name = facts.get("zone") or None
        if zone_name:
            zone = session.execute(select(Zone).where(Zone.name == zone_name)).scalar_one_or_none()
            if zone is None:
                zone = Zone(name=zone_name, org_id=host.org_id, status="active")
                session.add(zone)
                session.flush()
            host.zone_id = zone.id
        else:
            host.zone_id = None
        log.info("host_facts", host=host.name, vcpus=host.vcpus, memory_mb=host.memory_mb, disk_gb=host.disk_gb,
                 zone=zone_name)
