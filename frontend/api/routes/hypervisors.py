"""Hypervisors: registered from the tree's joins, with the capacity their backends report."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sci import NodeStatus

from ...auth import Role
from ...bootstrap import admin_org_id
from ...db.models import Event, Hypervisor, Instance, Snapshot, Volume, Zone
from ...enrolment import is_revoked
from ...errors import Conflict, NotFound
from ...hosts import TREE_VIEW_MAX_AGE_S
from ..deps import CallerDep, FrontendDep
from ..refusals import refusals
from ..schemas import V1, Input, Items, Moment, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["hypervisors"])


class Capacity(BaseModel):
    vcpus: int
    memory_mb: int
    disk_gb: int


class HypervisorView(ResourceView):
    name: str
    zone: str | None
    enabled: bool
    total: Capacity
    used: Capacity
    #: what the scheduler may still place, after overcommit ratios
    free: Capacity
    instances: int
    #: when the tree last reported it up (refreshed every 30 s or so)
    last_seen_at: Moment | None
    #: seconds since its parent in the tree last heard from it; None if it is not in the tree
    heartbeat_age_s: float | None
    #: the tree's view now: up, suspect (heartbeats late), down; None if the tree did not answer
    tree_state: str | None
    #: 1-minute load average when its facts were last read (every 10 minutes, and when it comes up)
    load: float | None
    facts: dict[str, object]


class HypervisorUpdate(Input):
    enabled: bool


def _tree_view(frontend: FrontendDep) -> dict[str, NodeStatus]:
    """Each backend's state and heartbeat age as the tree sees them (a status query, or a second-old one)."""
    if frontend.tree is None or not frontend.tree.running:
        return {}  # a standby: the table's states alone
    try:
        nodes = frontend.tree.tree_status(timeout=1.0, max_age=TREE_VIEW_MAX_AGE_S)
        return {n.node_id: n for n in nodes if n.role == "backend"}
    except TimeoutError:
        return {}


def _load(facts: dict[str, object] | None) -> float | None:
    load = (facts or {}).get("load")
    return float(load[0]) if isinstance(load, list) and load and isinstance(load[0], (int, float)) else None


def _view(frontend: FrontendDep, host: Hypervisor, zone: str | None, instances: int,
          tree: dict[str, NodeStatus]) -> HypervisorView:
    free = frontend.scheduler.free(host)
    node = tree.get(host.name)
    return HypervisorView(
        id=host.id, org_id=host.org_id, status=host.status, created_at=host.created_at, updated_at=host.updated_at,
        name=host.name, zone=zone, enabled=host.enabled,
        total=Capacity(vcpus=host.vcpus, memory_mb=host.memory_mb, disk_gb=host.disk_gb),
        used=Capacity(vcpus=host.vcpus_used, memory_mb=host.memory_mb_used, disk_gb=host.disk_gb_used),
        free=Capacity(vcpus=free.vcpus, memory_mb=free.memory_mb, disk_gb=free.disk_gb),
        instances=instances, last_seen_at=host.last_seen_at, heartbeat_age_s=node.heartbeat_age if node else None,
        tree_state=node.state if node else ("down" if tree else None), load=_load(host.facts),
        facts=host.facts or {})


def _rows(session: Session, host_id: str | None = None) -> list[tuple[Hypervisor, str | None, int]]:
    counts = (select(Instance.hypervisor_id, func.count().label("n")).group_by(Instance.hypervisor_id).subquery())
    query = (select(Hypervisor, Zone.name, func.coalesce(counts.c.n, 0))
             .outerjoin(Zone, Zone.id == Hypervisor.zone_id)
             .outerjoin(counts, counts.c.hypervisor_id == Hypervisor.id)
             .order_by(Hypervisor.name))
    if host_id is not None:
        query = query.where((Hypervisor.id == host_id) | (Hypervisor.name == host_id))
    return [(h, z, int(n)) for h, z, n in session.execute(query).all()]


@router.get("/hypervisors", response_model=Items[HypervisorView], summary="List hypervisors (admin)",
            responses=refusals(403))
def list_hypervisors(caller: CallerDep, frontend: FrontendDep) -> Items[HypervisorView]:
    caller.require(Role.admin, "listing hypervisors")
    with frontend.db.read() as session:
        rows = _rows(session)
    tree = _tree_view(frontend)
    return Items(items=[_view(frontend, *row, tree) for row in rows])


@router.get("/hypervisors/{host}", response_model=HypervisorView, summary="Show a hypervisor by id or name (admin)",
            responses=refusals(403))
def show_hypervisor(host: Ref, caller: CallerDep, frontend: FrontendDep) -> HypervisorView:
    caller.require(Role.admin, "reading a hypervisor")
    with frontend.db.read() as session:
        rows = _rows(session, host)
    if not rows:
        raise NotFound("hypervisor", host)
    return _view(frontend, *rows[0], _tree_view(frontend))


@router.patch("/hypervisors/{host}", response_model=HypervisorView,
              summary="Enable or disable a hypervisor for new instances (admin)")
def update_hypervisor(host: Ref, body: HypervisorUpdate, caller: CallerDep, frontend: FrontendDep) -> HypervisorView:
    caller.require(Role.admin, "changing a hypervisor")
    with frontend.db.transaction() as session:
        rows = _rows(session, host)
        if not rows:
            raise NotFound("hypervisor", host)
        rows[0][0].enabled = body.enabled
        session.flush()
    return _view(frontend, *rows[0], _tree_view(frontend))


@router.delete("/hypervisors/{host}", status_code=status.HTTP_204_NO_CONTENT, responses=refusals(403, 409),
               summary="Remove a hypervisor that is gone for good: its key revoked, nothing left on it (admin)")
def delete_hypervisor(host: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    """Only a revoked host can go: one whose key still attaches would come back with its guests, and
    register again.  Its instances, volumes and snapshots are deleted first, by their owners or by
    an admin; with the host revoked, those deletes forget them without asking it."""
    caller.require(Role.admin, "removing a hypervisor")
    with frontend.db.transaction() as session:
        rows = _rows(session, host)
        if not rows:
            raise NotFound("hypervisor", host)
        row = rows[0][0]
        if not is_revoked(session, row.name):
            raise Conflict(f"{row.name} may still attach to the tree: revoke its key first "
                           f"(clctl hypervisor revoke {row.name})")
        held = {what: session.execute(select(func.count()).where(model.hypervisor_id == row.id)).scalar()
                for what, model in (("instances", Instance), ("volumes", Volume), ("snapshots", Snapshot))}
        if any(held.values()):
            raise Conflict(", ".join(f"{n} {what}" for what, n in held.items() if n)
                           + f" still on {row.name}: delete them first (they go without asking the revoked host)")
        session.add(Event(org_id=admin_org_id(frontend.db), kind="host.removed", host=row.name,
                          resource_type="hypervisor", resource_id=row.id,
                          message=f"{row.name} removed by an admin"))
        session.delete(row)
