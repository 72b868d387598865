"""Volume tasks: create on a hypervisor's storage, delete, attach to and detach from an instance.

Volumes live on one hypervisor's local storage, so a volume and the instances it attaches
to share a host: a volume made for an instance is placed on that instance's host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from ..db.models import Hypervisor, Instance, Task, Volume
from ..hostops import HOST_OP_TIMEOUT, VOLUME_ATTACH, VOLUME_CREATE, VOLUME_DELETE, VOLUME_DETACH
from ..hostalias import mention
from ..scheduler import Demand
from ..tasks import TaskContext, TaskFailed, Workflow

if TYPE_CHECKING:
    from ..services import Frontend

__all__ = ["workflows"]



def _volume(session: Session, volume_id: str) -> Volume:
    volume = session.get(Volume, volume_id)
    if volume is None:
        raise TaskFailed(f"volume {volume_id} no longer exists")
    return volume


class _Base:
    def __init__(self, frontend: "Frontend") -> None:
        self.fe = frontend

    def _host(self, volume_id: str) -> str:
        with self.fe.db.read() as session:
            volume = _volume(session, volume_id)
            host = session.get(Hypervisor, volume.hypervisor_id) if volume.hypervisor_id else None
            if host is None:
                raise TaskFailed("the volume has no hypervisor")
            return host.name


class Create(_Base):
    def run(self, ctx: TaskContext, task: Task) -> None:
        vid = task.resource_id
        host = ctx.once("place", lambda s: self._place(s, vid, task.params.get("instance_id"),
                                                          task.params.get("zone_id")))
        if host is None:
            raise TaskFailed("no hypervisor has room for it")
        size = task.params["size_gb"]
        result = ctx.command("create", VOLUME_CREATE, {"volume_id": vid, "size_gb": size}, [host],
                             timeout=HOST_OP_TIMEOUT)[host]
        if not result.ok:
            raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("ready", lambda s: setattr(_volume(s, vid), "status", "available"))

    def _place(self, session: Session, vid: str, instance_id: str | None, zone_id: str | None) -> str | None:
        volume = _volume(session, vid)
        need = Demand(disk_gb=volume.size_gb)
        if instance_id is not None:
            instance = session.get(Instance, instance_id)
            if instance is None or instance.hypervisor_id is None:
                return None
            if not self.fe.scheduler.reserve(session, instance.hypervisor_id, need):
                return None
            host = session.get(Hypervisor, instance.hypervisor_id)
        else:
            host = self.fe.scheduler.place(session, need, zone_id)
        if host is None:
            return None
        volume.hypervisor_id = host.id
        return host.name

    def failed(self, session: Session, task: Task, reason: str) -> None:
        volume = session.get(Volume, task.resource_id)
        if volume is not None:
            if volume.hypervisor_id is not None:
                self.fe.scheduler.release(session, volume.hypervisor_id, Demand(disk_gb=volume.size_gb))
                volume.hypervisor_id = None
            volume.status, volume.fault = "error", reason


class Delete(_Base):
    def run(self, ctx: TaskContext, task: Task) -> None:
        vid = task.resource_id
        with self.fe.db.read() as session:
            placed = _volume(session, vid).hypervisor_id is not None
        if placed:
            host = self._host(vid)
            result = ctx.command("delete", VOLUME_DELETE, {"volume_id": vid}, [host], timeout=HOST_OP_TIMEOUT)[host]
            if not result.ok:
                raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("forget", lambda s: self._forget(s, vid))

    def _forget(self, session: Session, vid: str) -> None:
        volume = _volume(session, vid)
        if volume.hypervisor_id is not None:
            self.fe.scheduler.release(session, volume.hypervisor_id, Demand(disk_gb=volume.size_gb))
        session.delete(volume)

    def failed(self, session: Session, task: Task, reason: str) -> None:
        volume = session.get(Volume, task.resource_id)
        if volume is not None:
            volume.status, volume.fault = "error", f"delete failed: {reason}"


class Attach(_Base):
    def run(self, ctx: TaskContext, task: Task) -> None:
        vid, iid = task.resource_id, task.params["instance_id"]
        host = self._host(vid)
        result = ctx.command("attach", VOLUME_ATTACH, {"volume_id": vid, "instance_id": iid}, [host],
                             timeout=HOST_OP_TIMEOUT)[host]
        if not result.ok:
            raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("attached", lambda s: setattr(_volume(s, vid), "status", "in-use"))

    def failed(self, session: Session, task: Task, reason: str) -> None:
        volume = session.get(Volume, task.resource_id)
        if volume is not None:
            volume.status, volume.instance_id, volume.fault = "available", None, f"attach failed: {reason}"


class Detach(_Base):
    def run(self, ctx: TaskContext, task: Task) -> None:
        vid, iid = task.resource_id, task.params["instance_id"]
        host = self._host(vid)
        result = ctx.command("detach", VOLUME_DETACH, {"volume_id": vid, "instance_id": iid}, [host],
                             timeout=HOST_OP_TIMEOUT)[host]
        if not result.ok:
            raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("detached", lambda s: self._detached(s, vid))

    def _detached(self, session: Session, vid: str) -> None:
        volume = _volume(session, vid)
        volume.status, volume.instance_id, volume.fault = "available", None, None

    def failed(self, session: Session, task: Task, reason: str) -> None:
        volume = session.get(Volume, task.resource_id)
        if volume is not None:
            volume.status, volume.fault = "in-use", f"detach failed: {reason}"


def workflows(frontend: "Frontend") -> dict[str, Workflow]:
    return {"volume.create": Create(frontend), "volume.delete": Delete(frontend), "volume.attach": Attach(frontend),
            "volume.detach": Detach(frontend)}
