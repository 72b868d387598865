"""Volume and snapshot tasks: create, delete, attach to and detach from an instance; take and delete snapshots.

Volumes live on one hypervisor's local storage, and a volume and the instance it attaches to
share a host.  A volume made empty has no host until its first attach: it is made then, on the
instance's host, and stays there (it holds data from then on).  A volume made from a snapshot
is made at once, on the snapshot's host.  ``hypervisor_id`` set means the volume's room is held
on that host; it is released when the volume is unmade or deleted.

Snapshots are files of their own on their volume's host, holding its room from the API call
that asks for them until they are deleted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..db import Database
from ..db.models import Hypervisor, Instance, Snapshot, Task, Volume
from ..enrolment import is_revoked
from ..hostalias import mention
from ..hostops import (COPY_TIMEOUT, HOST_OP_TIMEOUT, SNAPSHOT_DELETE, VOLUME_ATTACH, VOLUME_CREATE, VOLUME_DELETE,
                       VOLUME_DETACH, VOLUME_SNAPSHOT)
from ..scheduler import Demand, Scheduler
from ..tasks import HostResult, TaskContext, TaskFailed, Workflow

__all__ = ["workflows"]

#: the instance statuses a volume attaches in
ATTACHABLE = ("active", "stopped")


def _volume(session: Session, volume_id: str) -> Volume:
    volume = session.get(Volume, volume_id)
    if volume is None:
        raise TaskFailed(f"volume {volume_id} no longer exists")
    return volume


def _snapshot(session: Session, snapshot_id: str) -> Snapshot:
    snapshot = session.get(Snapshot, snapshot_id)
    if snapshot is None:
        raise TaskFailed(f"snapshot {snapshot_id} no longer exists")
    return snapshot


def _host_name(session: Session, host_id: str | None, what: str) -> str:
    host = session.get(Hypervisor, host_id) if host_id else None
    if host is None:
        raise TaskFailed(f"the {what} has no hypervisor")
    return host.name


def _on_live_host(db: Database, host_id: str | None, what: str) -> str | None:
    """The name of the host the volume or snapshot is on; None if its key is revoked: gone for good,
    with its disk, so there is nothing to delete there."""
    with db.read() as session:
        host = _host_name(session, host_id, what)
        return None if is_revoked(session, host) else host


class _Base:
    def __init__(self, db: Database, scheduler: Scheduler) -> None:
        self.db = db
        self.scheduler = scheduler

    def _host(self, volume_id: str) -> str:
        with self.db.read() as session:
            return _host_name(session, _volume(session, volume_id).hypervisor_id, "volume")

    @staticmethod
    def _on(ctx: TaskContext, step: str, op: str, body: dict[str, Any], host: str,
            timeout: float = HOST_OP_TIMEOUT) -> HostResult:
        return ctx.command(step, op, body, [host], timeout=timeout)[host]

    def _place_and_attach(self, ctx: TaskContext, vid: str, iid: str) -> None:
        """Attach the volume to the instance; a volume on no host yet is made on the instance's first.

        A volume made here and not attached is unmade again: it holds nothing, and it may then be
        attached anywhere.
        """
        where = ctx.once("place", lambda s: self._place(s, vid, iid))
        host, made_here = where["name"], where["new"]
        if made_here:
            made = self._on(ctx, "create", VOLUME_CREATE, {"volume_id": vid, "size_gb": where["size_gb"]}, host)
            if not made.ok:
                self._unmake(ctx, vid, host)
                raise TaskFailed(f"{mention(host)}: {made.describe()}")
        attached = self._on(ctx, "attach", VOLUME_ATTACH, {"volume_id": vid, "instance_id": iid}, host)
        if not attached.ok:
            if made_here:
                self._unmake(ctx, vid, host)
            raise TaskFailed(f"{mention(host)}: {attached.describe()}")
        ctx.once("attached", lambda s: self._attached(s, vid, attached.payload))

    def _place(self, session: Session, vid: str, iid: str) -> dict[str, Any]:
        volume = _volume(session, vid)
        instance = session.get(Instance, iid)
        if instance is None:
            raise TaskFailed(f"instance {iid} no longer exists")
        if instance.status not in ATTACHABLE or instance.hypervisor_id is None:
            raise TaskFailed(f"instance {instance.name!r} is {instance.status}; it must be active or stopped")
        host = session.get(Hypervisor, instance.hypervisor_id)
        assert host is not None
        new = volume.hypervisor_id is None
        if new:
            if volume.zone_id is not None and host.zone_id != volume.zone_id:
                raise TaskFailed(f"instance {instance.name!r} is in another zone than the volume's")
            if not self.scheduler.reserve(session, host.id, Demand(disk_gb=volume.size_gb)):
                raise TaskFailed(f"{mention(host.name)} has no room for the volume's {volume.size_gb} GB")
            volume.hypervisor_id = host.id
        elif volume.hypervisor_id != host.id:
            raise TaskFailed(f"the volume holds data on {mention(_host_name(session, volume.hypervisor_id, 'volume'))}"
                             f" and instance {instance.name!r} is on {mention(host.name)}")
        volume.instance_id, volume.status = iid, "attaching"
        # "name", as every placement names its host: tenants are shown its alias instead (routes/tasks.py)
        return {"name": host.name, "new": new, "size_gb": volume.size_gb}

    def _unmake(self, ctx: TaskContext, vid: str, host: str) -> None:
        """Delete the volume from ``host`` and release its room; if even that fails, it is in error
        (it may be there, half made) and its delete tries again."""
        if self._on(ctx, "unmake", VOLUME_DELETE, {"volume_id": vid}, host).ok:
            ctx.once("unplace", lambda s: self._unplace(s, vid))
        else:
            ctx.once("broken", lambda s: setattr(_volume(s, vid), "status", "error"))

    def _unplace(self, session: Session, vid: str) -> None:
        volume = _volume(session, vid)
        if volume.hypervisor_id is not None:
            self.scheduler.release(session, volume.hypervisor_id, Demand(disk_gb=volume.size_gb))
            volume.hypervisor_id = None

    def _attached(self, session: Session, vid: str, payload: Any) -> None:
        volume = _volume(session, vid)
        volume.status, volume.fault = "in-use", None
        volume.device = payload.get("device") if isinstance(payload, dict) else None

    @staticmethod
    def _not_attached(volume: Volume, reason: str | None, usable: bool = True) -> None:
        volume.instance_id = volume.device = None
        if volume.status != "error":
            volume.status = "available" if usable else "error"
        volume.fault = reason


class Create(_Base):
    """An empty volume waits for its first attach; one from a snapshot is copied on the snapshot's host
    (its room there held by the API call); with an instance, it is then attached to it."""

    def run(self, ctx: TaskContext, task: Task) -> None:
        vid, p = task.resource_id, task.params
        if p.get("snapshot_id") is not None:
            host = self._host(vid)
            body = {"volume_id": vid, "size_gb": p["size_gb"], "snapshot_id": p["snapshot_id"]}
            made = self._on(ctx, "create", VOLUME_CREATE, body, host, timeout=COPY_TIMEOUT)
            if not made.ok:
                self._unmake(ctx, vid, host)
                raise TaskFailed(f"{mention(host)}: {made.describe()}")
            ctx.once("made", lambda s: setattr(_volume(s, vid), "status", "available"))
        if p.get("instance_id") is not None:
            self._place_and_attach(ctx, vid, p["instance_id"])
        else:
            ctx.once("ready", lambda s: setattr(_volume(s, vid), "status", "available"))

    def failed(self, session: Session, task: Task, reason: str) -> None:
        volume = session.get(Volume, task.resource_id)
        if volume is not None:
            # A volume from a snapshot that never got its data is of no use; an empty one is.
            unmade = volume.status == "creating" and task.params.get("snapshot_id") is not None
            self._not_attached(volume, reason, usable=not unmade)


class Delete(_Base):
    def run(self, ctx: TaskContext, task: Task) -> None:
        vid = task.resource_id
        with self.db.read() as session:
            host_id = _volume(session, vid).hypervisor_id
        host = _on_live_host(self.db, host_id, "volume") if host_id is not None else None
        if host is not None:
            result = self._on(ctx, "delete", VOLUME_DELETE, {"volume_id": vid}, host)
            if not result.ok:
                raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("forget", lambda s: self._forget(s, vid))

    def _forget(self, session: Session, vid: str) -> None:
        volume = _volume(session, vid)
        if volume.hypervisor_id is not None:
            self.scheduler.release(session, volume.hypervisor_id, Demand(disk_gb=volume.size_gb))
        # Snapshots are copies of their own: they outlive the volume they were taken of.
        session.execute(update(Snapshot).where(Snapshot.volume_id == vid).values(volume_id=None)
                        .execution_options(synchronize_session=False))
        session.delete(volume)

    def failed(self, session: Session, task: Task, reason: str) -> None:
        volume = session.get(Volume, task.resource_id)
        if volume is not None:
            volume.status, volume.fault = "error", f"delete failed: {reason}"


class Attach(_Base):
    def run(self, ctx: TaskContext, task: Task) -> None:
        self._place_and_attach(ctx, task.resource_id, task.params["instance_id"])

    def failed(self, session: Session, task: Task, reason: str) -> None:
        volume = session.get(Volume, task.resource_id)
        if volume is not None:
            self._not_attached(volume, f"attach failed: {reason}")


class Detach(_Base):
    def run(self, ctx: TaskContext, task: Task) -> None:
        vid, iid = task.resource_id, task.params["instance_id"]
        host = self._host(vid)
        result = self._on(ctx, "detach", VOLUME_DETACH, {"volume_id": vid, "instance_id": iid}, host)
        if not result.ok:
            raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("detached", lambda s: self._not_attached(_volume(s, vid), None))

    def failed(self, session: Session, task: Task, reason: str) -> None:
        volume = session.get(Volume, task.resource_id)
        if volume is not None:
            volume.status, volume.fault = "in-use", f"detach failed: {reason}"


class TakeSnapshot:
    """Copy the volume on its host; the host says how consistent the copy is."""

    def __init__(self, db: Database, scheduler: Scheduler) -> None:
        self.db = db
        self.scheduler = scheduler

    def run(self, ctx: TaskContext, task: Task) -> None:
        sid, vid = task.resource_id, task.params["volume_id"]
        with self.db.read() as session:
            host = _host_name(session, _snapshot(session, sid).hypervisor_id, "snapshot")
        result = ctx.command("snapshot", VOLUME_SNAPSHOT, {"volume_id": vid, "snapshot_id": sid}, [host],
                             timeout=COPY_TIMEOUT)[host]
        if not result.ok:
            # The host removes a copy that failed; one cut off by silence or a dying backend may
            # be there still.  Deleting is idempotent, so always ask; if that fails too, the
            # snapshot's delete asks again.
            ctx.command("cleanup", SNAPSHOT_DELETE, {"snapshot_id": sid}, [host], timeout=HOST_OP_TIMEOUT)
            raise TaskFailed(f"{mention(host)}: {result.describe()}")
        consistency = result.payload.get("consistency") if isinstance(result.payload, dict) else None
        ctx.once("taken", lambda s: self._taken(s, sid, consistency))

    @staticmethod
    def _taken(session: Session, sid: str, consistency: str | None) -> None:
        snapshot = _snapshot(session, sid)
        snapshot.status, snapshot.consistency, snapshot.fault = "available", consistency, None

    def failed(self, session: Session, task: Task, reason: str) -> None:
        snapshot = session.get(Snapshot, task.resource_id)
        if snapshot is not None:
            snapshot.status, snapshot.fault = "error", reason


class DeleteSnapshot:
    def __init__(self, db: Database, scheduler: Scheduler) -> None:
        self.db = db
        self.scheduler = scheduler

    def run(self, ctx: TaskContext, task: Task) -> None:
        sid = task.resource_id
        with self.db.read() as session:
            host_id = _snapshot(session, sid).hypervisor_id
        host = _on_live_host(self.db, host_id, "snapshot")
        if host is not None:
            result = ctx.command("delete", SNAPSHOT_DELETE, {"snapshot_id": sid}, [host],
                                 timeout=HOST_OP_TIMEOUT)[host]
            if not result.ok:
                raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("forget", lambda s: self._forget(s, sid))

    def _forget(self, session: Session, sid: str) -> None:
        snapshot = _snapshot(session, sid)
        self.scheduler.release(session, snapshot.hypervisor_id, Demand(disk_gb=snapshot.size_gb))
        session.delete(snapshot)

    def failed(self, session: Session, task: Task, reason: str) -> None:
        snapshot = session.get(Snapshot, task.resource_id)
        if snapshot is not None:
            snapshot.status, snapshot.fault = "error", f"delete failed: {reason}"


def workflows(db: Database, scheduler: Scheduler) -> dict[str, Workflow]:
    return {"volume.create": Create(db, scheduler), "volume.delete": Delete(db, scheduler),
            "volume.attach": Attach(db, scheduler), "volume.detach": Detach(db, scheduler),
            "snapshot.create": TakeSnapshot(db, scheduler), "snapshot.delete": DeleteSnapshot(db, scheduler)}
