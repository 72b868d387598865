"""Volumes: disks on a hypervisor's storage that outlive instances."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import Field
from sqlalchemy.orm import Session

from ... import lifecycle, quotas
from ...auth import Caller, Role
from ...db.models import Hypervisor, Instance, Volume
from ...errors import Conflict
from ...hostalias import AS_SEEN, seen, shown
from ..deps import CallerDep, FrontendDep
from ..lookup import find, find_zone, get_owned, owned
from ..schemas import V1, Input, Items, Name, Ref, ResourceView
from .tasks import Accepted, task_view

router = APIRouter(prefix=V1, tags=["volumes"])


class VolumeCreate(Input):
    name: Name
    size_gb: int = Field(ge=1, le=16384)
    instance: Ref | None = Field(default=None, description="create it on this instance's hypervisor, to attach it")
    zone: Ref | None = None


class Attach(Input):
    instance: Ref


class VolumeView(ResourceView):
    name: str
    size_gb: int
    instance_id: str | None
    fault: str | None = Field(description=f"Why its last task failed; {AS_SEEN}")


def volume_view(caller: Caller, volume: Volume) -> VolumeView:
    view = VolumeView.model_validate(volume)
    return view.model_copy(update={"fault": shown(volume.fault, volume.org_id, caller.is_admin)})


@router.post("/volumes", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[VolumeView],
             summary="Create a volume (answers with the task)")
def create_volume(body: VolumeCreate, caller: CallerDep, frontend: FrontendDep) -> Accepted[VolumeView]:
    caller.require(Role.member, "creating a volume")
    with frontend.db.transaction() as session:
        params: dict[str, object] = {"size_gb": body.size_gb}
        if body.instance is not None:
            instance = find(session, Instance, body.instance, caller, "instance", "instance")
            if instance.hypervisor_id is None:
                raise Conflict(f"instance {instance.name!r} has no hypervisor yet ({instance.status})", "instance")
            params["instance_id"] = instance.id
        if body.zone is not None:
            params["zone_id"] = find_zone(session, body.zone).id
        quotas.check(session, caller.org_id, volumes=1, volume_gb=body.size_gb)
        volume = Volume(org_id=caller.org_id, name=body.name, size_gb=body.size_gb, status="creating")
        session.add(volume)
        session.flush()
        task = frontend.tasks.create(session, "volume.create", caller.org_id, caller.user_id, "volume", volume.id,
                                     params)
        accepted = Accepted[VolumeView](task=task_view(task, caller), resource=volume_view(caller, volume))
    frontend.tasks.start(task.id)
    return accepted


@router.get("/volumes", response_model=Items[VolumeView], summary="List volumes")
def list_volumes(caller: CallerDep, frontend: FrontendDep) -> Items[VolumeView]:
    with frontend.db.read() as session:
        rows = session.execute(owned(Volume, caller).order_by(Volume.created_at)).scalars()
        return Items(items=[volume_view(caller, v) for v in rows])


@router.get("/volumes/{volume}", response_model=VolumeView, summary="Show a volume by id or name")
def show_volume(volume: Ref, caller: CallerDep, frontend: FrontendDep) -> VolumeView:
    with frontend.db.read() as session:
        return volume_view(caller, find(session, Volume, volume, caller, "volume"))


def _act(frontend: FrontendDep, caller: Caller, ref: str, action: str,
         instance_ref: str | None = None) -> Accepted[VolumeView]:
    caller.require(Role.member, f"{action} of a volume")
    with frontend.db.transaction() as session:
        volume = find(session, Volume, ref, caller, "volume")
        volume = get_owned(session, Volume, volume.id, caller, "volume", lock=True)
        params: dict[str, object] = {}
        if action == "attach":
            assert instance_ref is not None
            params["instance_id"] = _attachable(session, caller, volume, instance_ref).id
        elif action == "detach":
            params["instance_id"] = volume.instance_id
        lifecycle.begin(lifecycle.VOLUME, "volume", volume, action)
        if action == "attach":
            volume.instance_id = str(params["instance_id"])
        task = frontend.tasks.create(session, f"volume.{action}", caller.org_id, caller.user_id, "volume", volume.id,
                                     params)
        accepted = Accepted[VolumeView](task=task_view(task, caller), resource=volume_view(caller, volume))
    frontend.tasks.start(task.id)
    return accepted


def _attachable(session: Session, caller: Caller, volume: Volume, ref: str) -> Instance:
    instance = find(session, Instance, ref, caller, "instance", "instance")
    if instance.status not in ("active", "stopped"):
        raise Conflict(f"instance {instance.name!r} is {instance.status}; it must be active or stopped", "instance")
    if volume.hypervisor_id != instance.hypervisor_id:
        raise Conflict(f"volume {volume.name!r} is on {_where(session, caller, volume)} and instance "
                       f"{instance.name!r} on {_where(session, caller, instance)}; volumes are local to one "
                       "hypervisor: create the volume with instance set to attach it there", "instance")
    return instance


def _where(session: Session, caller: Caller, row: Volume | Instance) -> str:
    host = session.get(Hypervisor, row.hypervisor_id) if row.hypervisor_id else None
    return seen(host.name, row.org_id, caller.is_admin) if host else "no hypervisor"


@router.post("/volumes/{volume}/attach", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[VolumeView],
             summary="Attach a volume to an instance on the same hypervisor")
def attach_volume(volume: Ref, body: Attach, caller: CallerDep, frontend: FrontendDep) -> Accepted[VolumeView]:
    return _act(frontend, caller, volume, "attach", instance_ref=body.instance)


@router.post("/volumes/{volume}/detach", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[VolumeView],
             summary="Detach a volume from its instance")
def detach_volume(volume: Ref, caller: CallerDep, frontend: FrontendDep) -> Accepted[VolumeView]:
    return _act(frontend, caller, volume, "detach")


@router.delete("/volumes/{volume}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[VolumeView],
               summary="Delete a detached volume")
def delete_volume(volume: Ref, caller: CallerDep, frontend: FrontendDep) -> Accepted[VolumeView]:
    return _act(frontend, caller, volume, "delete")
