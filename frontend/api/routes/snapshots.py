"""Volume snapshots: point-in-time copies on their volume's hypervisor, and new volumes made from them."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from pydantic import Field

from ... import lifecycle, quotas
from ...auth import Caller, Role
from ...db.models import Hypervisor, Snapshot, Volume
from ...errors import Conflict
from ...hostalias import AS_SEEN, seen, shown
from ...scheduler import Demand
from ..deps import CallerDep, FrontendDep
from ..lookup import find, get_owned, owned
from ..refusals import refusals
from ..schemas import V1, Input, Items, Name, Ref, ResourceView
from .tasks import Accepted, task_view

router = APIRouter(prefix=V1, tags=["snapshots"])

#: the volume statuses a snapshot is taken in: not while it is made, moved between instances or deleted
SNAPSHOTTABLE = ("available", "in-use")


class SnapshotCreate(Input):
    name: Name
    volume: Ref


class SnapshotView(ResourceView):
    name: str
    volume_id: str | None = Field(description="the volume it was taken of; null once that volume is deleted")
    size_gb: int = Field(description="the volume's size when it was taken: what volumes made from it are at least")
    consistency: str | None = Field(description=(
        "what it holds of the guest's writes, null until taken: `frozen`, the guest agent froze the guest's file "
        "systems (everything they had accepted); `crash-consistent`, a running guest without an answering guest "
        "agent (what a power cut at that moment would have left on the disk); `offline`, no running guest had "
        "the volume (everything written)"))
    hypervisor: str | None = Field(description=f"where it is (its volume's hypervisor); {AS_SEEN}")
    fault: str | None = Field(description=f"Why its last task failed; {AS_SEEN}")


def snapshot_view(caller: Caller, snapshot: Snapshot, host: Hypervisor | None) -> SnapshotView:
    return SnapshotView(
        id=snapshot.id, org_id=snapshot.org_id, status=snapshot.status, created_at=snapshot.created_at,
        updated_at=snapshot.updated_at, name=snapshot.name, volume_id=snapshot.volume_id, size_gb=snapshot.size_gb,
        consistency=snapshot.consistency, hypervisor=seen(host.name, snapshot.org_id, caller.is_admin) if host else None,
        fault=shown(snapshot.fault, snapshot.org_id, caller.is_admin))


@router.post("/snapshots", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[SnapshotView],
             summary="Take a snapshot of a volume (answers with the task)",
             description="A copy of the volume as it is now, kept on the volume's hypervisor, counted in the "
                         "snapshots and snapshot_gb quotas. A volume attached to a running instance is copied live "
                         "and consistently: writes go aside while it is copied, with the guest's file systems "
                         "frozen first where a guest agent answers (consistency `frozen`), else crash-consistent "
                         "(consistency `crash-consistent`). A volume that was never attached holds nothing and is "
                         "refused.")
def create_snapshot(body: SnapshotCreate, caller: CallerDep, frontend: FrontendDep) -> Accepted[SnapshotView]:
    caller.require(Role.member, "taking a snapshot")
    with frontend.db.transaction() as session:
        volume = find(session, Volume, body.volume, caller, "volume", "volume")
        if volume.status not in SNAPSHOTTABLE:
            raise Conflict(f"volume {volume.name!r} is {volume.status}; it must be available or in-use", "volume")
        if volume.hypervisor_id is None:
            raise Conflict(f"volume {volume.name!r} has never been attached: it holds nothing yet", "volume")
        host = session.get(Hypervisor, volume.hypervisor_id)
        quotas.check(session, caller.org_id, snapshots=1, snapshot_gb=volume.size_gb)
        # Its room is held now, for the snapshot's whole life: a copy that cannot fit is refused at once.
        if not frontend.scheduler.reserve(session, volume.hypervisor_id, Demand(disk_gb=volume.size_gb)):
            where = seen(host.name, caller.org_id, caller.is_admin) if host else "its hypervisor"
            raise Conflict(f"{where}, where volume {volume.name!r} is, has no room for a copy of "
                           f"{volume.size_gb} GB", "volume")
        snapshot = Snapshot(org_id=caller.org_id, name=body.name, volume_id=volume.id,
                            hypervisor_id=volume.hypervisor_id, size_gb=volume.size_gb, status="creating")
        session.add(snapshot)
        session.flush()
        task = frontend.tasks.create(session, "snapshot.create", caller.org_id, caller.user_id, "snapshot",
                                     snapshot.id, {"volume_id": volume.id})
        accepted = Accepted[SnapshotView](task=task_view(task, caller), resource=snapshot_view(caller, snapshot, host))
    frontend.tasks.start(task.id)
    return accepted


@router.get("/snapshots", response_model=Items[SnapshotView], summary="List snapshots",
            responses=refusals(404))
def list_snapshots(caller: CallerDep, frontend: FrontendDep,
                   volume: Ref | None = Query(default=None, description="only those of this volume")) -> Items[SnapshotView]:
    with frontend.db.read() as session:
        query = owned(Snapshot, caller).order_by(Snapshot.created_at)
        if volume is not None:
            query = query.where(Snapshot.volume_id == find(session, Volume, volume, caller, "volume", "volume").id)
        return Items(items=[snapshot_view(caller, s, session.get(Hypervisor, s.hypervisor_id))
                            for s in session.execute(query).scalars()])


@router.get("/snapshots/{snapshot}", response_model=SnapshotView, summary="Show a snapshot by id or name")
def show_snapshot(snapshot: Ref, caller: CallerDep, frontend: FrontendDep) -> SnapshotView:
    with frontend.db.read() as session:
        row = find(session, Snapshot, snapshot, caller, "snapshot")
        return snapshot_view(caller, row, session.get(Hypervisor, row.hypervisor_id))


@router.delete("/snapshots/{snapshot}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[SnapshotView],
               summary="Delete a snapshot (volumes made from it are copies: they stay)")
def delete_snapshot(snapshot: Ref, caller: CallerDep, frontend: FrontendDep) -> Accepted[SnapshotView]:
    caller.require(Role.member, "deleting a snapshot")
    with frontend.db.transaction() as session:
        found = find(session, Snapshot, snapshot, caller, "snapshot")
        row = get_owned(session, Snapshot, found.id, caller, "snapshot", lock=True)
        lifecycle.begin(lifecycle.SNAPSHOT, "snapshot", row, "delete")
        task = frontend.tasks.create(session, "snapshot.delete", caller.org_id, caller.user_id, "snapshot", row.id)
        accepted = Accepted[SnapshotView](task=task_view(task, caller),
                                          resource=snapshot_view(caller, row, session.get(Hypervisor, row.hypervisor_id)))
    frontend.tasks.start(task.id)
    return accepted
