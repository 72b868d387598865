"""Comparing what hypervisors run with what the state says, and recording the differences.

Each round asks every up host for its inventory (``compute.inventory``).  For instances that
are settled (active or stopped) on a host:

* reported with another power state: the state follows the host (``powerstate.follow_power``:
  an instance that shut itself down becomes ``stopped``, one that crashed ``crashed``), which
  its host's notice should have done already;
* not reported: ``drift.vanished``, in the owner's events, and its power state becomes
  ``missing``;
* reported but not placed there by the state: a *leftover* if this cloud knows the instance
  and no task of it is under way (it was deleted while its host was away, or a launch attempt
  there failed and its clean-up could not reach the host): ``drift.reaped``, and the reconcile
  deletes it on that host (unless ``reap_leftovers`` is off).  One the state has never heard of
  (no row, no task: another cloud's, or made after the backup the state was restored from) is
  ``drift.unknown``, in the admins' events, and left alone.

A drift is recorded once when it appears, not every round while it lasts.
"""

from __future__ import annotations

from typing import Any

import datetime as dt

import structlog
from sqlalchemy import select

from sci import Targets
from sci.leaf import EXIT_UNKNOWN_OP

from .bootstrap import admin_org_id
from .db import Database
from .db.models import Event, Hypervisor, Instance, Task, utcnow
from .hostops import HOST_OP_TIMEOUT, INSTANCE_DELETE, INVENTORY
from .lifecycle import INSTANCE_SETTLED
from .periodic import Periodic
from .powerstate import follow_power
from .tasks import ACTIVE, Submit

__all__ = ["Reconciler"]

log = structlog.get_logger("frontend.reconcile")



class Reconciler(Periodic):
    name = "reconcile"

    def __init__(self, db: Database, submit: Submit, interval: float, reap: bool = True) -> None:
        super().__init__(interval)
        self.db = db
        self.submit = submit
        #: whether leftovers are deleted on their hosts, or only reported
        self.reap = reap
        self._open: set[tuple[str, str, str]] = set()  # (kind, host, instance id) drifts already recorded

    def run_once(self) -> int:
        """One round; returns how many new drifts it recorded."""
        with self.db.read() as session:
            hosts = dict(session.execute(select(Hypervisor.name, Hypervisor.id).where(Hypervisor.status == "up")).all())
        if not hosts:
            return 0
        asked_at = utcnow()
        table = self.submit(INVENTORY, {}, Targets.to(*hosts), 30.0, None).wait(40.0)
        reports: dict[str, dict[str, str]] = {}
        for host, result in table.items():
            if result.ok and isinstance(result.payload, dict):
                reports[host] = {str(i["id"]): str(i.get("power_state", "unknown"))
                                 for i in result.payload.get("instances", []) if isinstance(i, dict) and "id" in i}
            elif result.exit_status != EXIT_UNKNOWN_OP:  # hosts without a compute driver have nothing to compare
                log.info("reconcile_host_skipped", host=host, status=result.status.name, message=result.message)
        leftovers: list[tuple[str, str]] = []
        new = self._compare(hosts, reports, asked_at, leftovers)
        self._reap(leftovers)
        return new

    def _reap(self, leftovers: list[tuple[str, str]]) -> None:
        handles = [(host, iid, self.submit(INSTANCE_DELETE, {"instance_id": iid}, Targets.to(host), HOST_OP_TIMEOUT,
                                           None)) for host, iid in leftovers]
        for host, iid, handle in handles:
            result = handle.wait(HOST_OP_TIMEOUT + 10).get(host)
            if result is not None and result.ok:
                log.info("leftover_reaped", host=host, instance=iid)
            else:  # the next round finds it again
                log.warning("leftover_not_reaped", host=host, instance=iid,
                            status=result.status.name if result else "LOST", message=result.message if result else "")

    def _compare(self, hosts: dict[str, str], reports: dict[str, dict[str, str]], asked_at: dt.datetime,
                 leftovers: list[tuple[str, str]]) -> int:
        """Record the drifts; add to ``leftovers`` the (host, instance id) to delete on their hosts."""
        admin = admin_org_id(self.db)
        still_open: set[tuple[str, str, str]] = set()
        new = 0
        with self.db.transaction() as session:
            by_id = {i.id: i for i in session.execute(
                select(Instance).where(Instance.hypervisor_id.in_([hosts[h] for h in reports]))).scalars()}
            for host, reported in reports.items():
                mine = [i for i in by_id.values() if i.hypervisor_id == hosts[host]]
                for instance in mine:
                    # Changed while the hosts were answering: the report may predate the change.
                    if instance.status not in INSTANCE_SETTLED or instance.updated_at >= asked_at:
                        continue
                    power = reported.get(instance.id)
                    if power is None:
                        new += self._drift(session, still_open, "vanished", host, instance.id, instance.org_id,
                                           f"instance {instance.name} ({instance.id}) is not on its hypervisor any more")
                        instance.power_state = "missing"
                    elif power != instance.power_state:
                        # Its notice was lost (the backend or libvirtd restarting at that moment).
                        follow_power(session, instance, host, power, f"was found {power} by the reconcile")
                for instance_id in sorted(set(reported) - {i.id for i in mine}):
                    why = _leftover(session, instance_id, asked_at)
                    if why is None:
                        new += self._drift(session, still_open, "unknown", host, instance_id, admin,
                                           f"{host} runs instance {instance_id}, which the state does not place there")
                    elif why:
                        if self.reap:
                            leftovers.append((host, instance_id))
                        new += self._drift(session, still_open, "reaped" if self.reap else "leftover", host,
                                           instance_id, admin, f"{host} runs instance {instance_id}, which {why}"
                                           + ("; deleted there" if self.reap else ""))
        self._open = still_open
        return new

    def _drift(self, session: Any, still_open: set[tuple[str, str, str]], kind: str, host: str, instance_id: str,
               org_id: str, message: str) -> int:
        key = (kind, host, instance_id)
        still_open.add(key)
        if key in self._open:
            return 0
        session.add(Event(org_id=org_id, kind=f"drift.{kind}", host=host, resource_type="instance",
                          resource_id=instance_id, message=message))
        log.warning("drift_found", kind=kind, host=host, instance=instance_id)
        return 1


def _leftover(session: Any, instance_id: str, asked_at: dt.datetime) -> str | None:
    """Why an instance a host runs but the state does not place there is a leftover of this cloud's;
    "" if a task of it is under way (its launch or delete will settle it) or ended since the host was
    asked (the report may predate what it did there); None if the state has never heard of it."""
    tasks = session.execute(select(Task.status, Task.finished_at).where(Task.resource_type == "instance",
                                                                        Task.resource_id == instance_id)).all()
    if any(status in ACTIVE or (finished is not None and finished >= asked_at) for status, finished in tasks):
        return ""
    instance = session.get(Instance, instance_id)
    if instance is not None:
        return "a failed launch attempt left there (the instance is placed elsewhere, or nowhere)"
    if tasks:
        return "was deleted while its hypervisor was away"
    return None
