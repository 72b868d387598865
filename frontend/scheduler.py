"""Placing instances and volumes on hypervisors, and holding their capacity.

Capacity is reserved with one conditional UPDATE per try ("add these vCPUs if they still
fit"), so two launches racing for a host's last room cannot both win, on SQLite or
PostgreSQL, without locking the host table.  Anti-affinity is made safe the same way by
locking the group's row while its members' hosts are read and the new one is chosen.

Only hosts attached to the tree right now are chosen: the table says ``up`` until the host
monitor's next pass, but a host whose process just died would fail the launch at once, and a
killed agent or host process takes hundreds of hosts away together.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Callable

import structlog
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from service.config import SchedulerSection

from .db.engine import changed, lock
from .db.models import Hypervisor, Instance, ServerGroup, utcnow

__all__ = ["Demand", "OnlyAwayHosts", "Scheduler"]

log = structlog.get_logger("frontend.scheduler")

#: candidates tried per placement, best first; enough to get past hosts taken by racing launches
CANDIDATES = 64


@dataclass(frozen=True)
class Demand:
    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0

    def __sub__(self, other: "Demand") -> "Demand":
        return Demand(self.vcpus - other.vcpus, self.memory_mb - other.memory_mb, self.disk_gb - other.disk_gb)

    @classmethod
    def of(cls, instance: Instance) -> "Demand":
        return cls(instance.vcpus, instance.memory_mb, instance.disk_gb)


class OnlyAwayHosts(Exception):
    """Hosts have room, but none of them is attached to the tree now."""

    def __init__(self, hosts: list[str]) -> None:
        super().__init__(f"{len(hosts)} hypervisors with room are away from the tree")
        self.hosts = hosts


class Scheduler:
    def __init__(self, settings: SchedulerSection, attached: Callable[[str], bool] | None = None,
                 down_wait_s: float = 0.0) -> None:
        self.settings = settings
        #: whether a host (by name) is attached to the tree now; None: every host counts as attached
        self.attached = attached
        #: a host seen up this recently may come back: when only such hosts have room, a launch
        #: waits for them (``OnlyAwayHosts``) instead of failing for want of room
        self.down_wait_s = down_wait_s

    def _fits(self, need: Demand) -> list[ColumnElement[bool]]:
        s = self.settings
        return [
            Hypervisor.vcpus_used + need.vcpus <= Hypervisor.vcpus * s.cpu_allocation_ratio,
            Hypervisor.memory_mb_used + need.memory_mb <= Hypervisor.memory_mb * s.ram_allocation_ratio,
            Hypervisor.disk_gb_used + need.disk_gb <= Hypervisor.disk_gb * s.disk_allocation_ratio,
        ]

    def free(self, host: Hypervisor) -> Demand:
        """What may still be placed on ``host``: its capacity after overcommit, less what is held."""
        s = self.settings
        return Demand(int(host.vcpus * s.cpu_allocation_ratio) - host.vcpus_used,
                      int(host.memory_mb * s.ram_allocation_ratio) - host.memory_mb_used,
                      int(host.disk_gb * s.disk_allocation_ratio) - host.disk_gb_used)

    def reserve(self, session: Session, host_id: str, need: Demand) -> bool:
        """Take ``need`` on one host if it still fits there; False if it does not."""
        return changed(session, update(Hypervisor)
            .where(Hypervisor.id == host_id, *self._fits(need))
            .values(vcpus_used=Hypervisor.vcpus_used + need.vcpus,
                    memory_mb_used=Hypervisor.memory_mb_used + need.memory_mb,
                    disk_gb_used=Hypervisor.disk_gb_used + need.disk_gb)
            .execution_options(synchronize_session=False)) == 1

    def release(self, session: Session, host_id: str, held: Demand) -> None:
        session.execute(
            update(Hypervisor).where(Hypervisor.id == host_id)
            .values(vcpus_used=Hypervisor.vcpus_used - held.vcpus,
                    memory_mb_used=Hypervisor.memory_mb_used - held.memory_mb,
                    disk_gb_used=Hypervisor.disk_gb_used - held.disk_gb)
            .execution_options(synchronize_session=False)
        )

    def place(self, session: Session, need: Demand, zone_id: str | None = None, group_id: str | None = None,
              exclude: frozenset[str] = frozenset(), member_id: str | None = None) -> Hypervisor | None:
        """Choose a host that is up, enabled, in ``zone_id``, holds no other member of the anti-affinity
        group ``group_id``, is not in ``exclude``, and has room; reserve ``need`` on it.

        Hosts with the most free memory come first, which spreads load.  None if no host fits;
        ``OnlyAwayHosts`` if some fit but none of them is attached to the tree now, or up.
        """
        avoid = set(exclude)
        if group_id is not None:
            group: ServerGroup | None = lock(session, ServerGroup, group_id)
            if group is not None and group.policy == "anti-affinity":
                taken = session.execute(
                    select(Instance.hypervisor_id).where(Instance.server_group_id == group_id,
                                                         Instance.hypervisor_id.is_not(None),
                                                         Instance.id != member_id)
                ).scalars()
                avoid.update(h for h in taken if h)
        fitting = (select(Hypervisor.id, Hypervisor.name)
                   .where(Hypervisor.enabled.is_(True), Hypervisor.facts_at.is_not(None), *self._fits(need))
                   .order_by((Hypervisor.memory_mb * self.settings.ram_allocation_ratio
                              - Hypervisor.memory_mb_used).desc(), Hypervisor.name))
        if zone_id is not None:
            fitting = fitting.where(Hypervisor.zone_id == zone_id)
        query = fitting.where(Hypervisor.status == "up")
        away: list[str] = []
        tried = 0
        # Candidates come in pages: a tree that just lost half its hosts costs a few more, not a scan.
        for page in itertools.count(0, CANDIDATES):
            rows = session.execute(query.offset(page).limit(CANDIDATES)).all()
            for host_id, name in rows:
                if host_id in avoid:
                    continue
                if self.attached is not None and not self.attached(name):
                    away.append(name)
                    continue
                if self.reserve(session, host_id, need):
                    log.info("scheduler_placed", host=name, vcpus=need.vcpus, memory_mb=need.memory_mb,
                             disk_gb=need.disk_gb, skipped_away=len(away))
                    return session.get(Hypervisor, host_id)
                tried += 1
            if len(rows) < CANDIDATES or tried >= CANDIDATES:
                break
        log.info("scheduler_no_host", vcpus=need.vcpus, memory_mb=need.memory_mb, disk_gb=need.disk_gb,
                 zone=zone_id, avoided=len(avoid), away=len(away))
        # No host that is here could take it: either none fits, or the last room on those that
        # did went to launches placed at the same moment.  Hosts with room that are away now, or
        # went down lately (all of a cloud's host processes restarting, the frontend cut off from
        # them), are worth a wait, not "no room".
        if not away and self.down_wait_s > 0:
            lately = utcnow() - dt.timedelta(seconds=self.down_wait_s)
            away = [name for host_id, name in session.execute(
                fitting.where(Hypervisor.status != "up", Hypervisor.last_seen_at >= lately).limit(CANDIDATES)).all()
                if host_id not in avoid]
        if away:
            raise OnlyAwayHosts(away)
        return None
