"""Volumes: disks on a hypervisor's storage that outlive instances (``frontend/workflows/volumes.py``)."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from ... import lifecycle, quotas
from ...auth import Caller, Role
from ...db.models import Hypervisor, Instance, Snapshot, Volume, Zone
from ...errors import Conflict, Invalid
from ...hostalias import AS_SEEN, seen, shown
from ...scheduler import Demand
from ...workflows.volumes import ATTACHABLE
from ..allorgs import AllOrgsDep
from ..deps import CallerDep, FrontendDep
from ..lookup import find, find_zone, get_owned, owned
from ..schemas import V1, Input, Items, Name, Ref, ResourceView
from .tasks import Accepted, task_view

router = APIRouter(prefix=V1, tags=["volumes"])


class VolumeCreate(Input):
    name: Name
    size_gb: int | None = Field(default=None, ge=1, le=16384,
                                description="required unless snapshot is given; from a snapshot, at least its "
                                            "size_gb (the default)")
    instance: Ref | None = Field(default=None, description="attach it to this instance (active or stopped) once "
                                                           "made: it is made on the instance's hypervisor")
    snapshot: Ref | None = Field(default=None, description="a copy of this snapshot, made on the snapshot's "
                                                           "hypervisor")
    zone: Ref | None = Field(default=None, description="it attaches only to instances on hypervisors of this zone")


class Attach(Input):
    instance: Ref


class Attachment(BaseModel):
    instance_id: str
    instance: str = Field(description="the instance's name")
    device: str | None = Field(description="the device the hypervisor attached it as (vdb, ...); the guest may "
                                           "name it differently, /dev/disk/by-id/virtio-<first 20 characters of "
                                           "the volume's id> does not change; null while attaching")


class VolumeView(ResourceView):
    name: str
    size_gb: int
    zone_id: str | None
    instance_id: str | None
    attachment: Attachment | None
    hypervisor: str | None = Field(description=f"where it is; null until it is first attached (or made from a "
                                                f"snapshot); {AS_SEEN}")
    fault: str | None = Field(description=f"Why its last task failed; {AS_SEEN}")


def volume_view(session: Session, caller: Caller, volume: Volume) -> VolumeView:
    instance = session.get(Instance, volume.instance_id) if volume.instance_id else None
    attachment = None if instance is None else Attachment(instance_id=instance.id, instance=instance.name,
                                                          device=volume.device)
    return VolumeView(
        id=volume.id, org_id=volume.org_id, status=volume.status, created_at=volume.created_at,
        updated_at=volume.updated_at, name=volume.name, size_gb=volume.size_gb, zone_id=volume.zone_id,
        instance_id=volume.instance_id, attachment=attachment, hypervisor=_host(session, caller, volume),
        fault=shown(volume.fault, volume.org_id, caller.is_admin))


def _host(session: Session, caller: Caller, row: Volume | Instance | Snapshot) -> str | None:
    host = session.get(Hypervisor, row.hypervisor_id) if row.hypervisor_id else None
    return seen(host.name, row.org_id, caller.is_admin) if host else None


@router.post("/volumes", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[VolumeView],
             summary="Create a volume (answers with the task)",
             description="A volume made empty and without an instance is on no hypervisor: it is made on the "
                         "hypervisor of the instance it is first attached to. With instance, it is made there and "
                         "attached once made. From a snapshot, it is a copy of it on the snapshot's hypervisor "
                         "(with instance, the instance must be there too).")
def create_volume(body: VolumeCreate, caller: CallerDep, frontend: FrontendDep) -> Accepted[VolumeView]:
    caller.require(Role.member, "creating a volume")
    with frontend.db.transaction() as session:
        snapshot = find(session, Snapshot, body.snapshot, caller, "snapshot", "snapshot") if body.snapshot else None
        size_gb = _size(body, snapshot)
        zone = find_zone(session, body.zone) if body.zone is not None else None
        instance = _instance_for(session, caller, body.instance) if body.instance is not None else None
        if instance is not None and snapshot is not None and instance.hypervisor_id != snapshot.hypervisor_id:
            raise Conflict(f"snapshot {snapshot.name!r} is on {_host(session, caller, snapshot)} and instance "
                           f"{instance.name!r} on {_host(session, caller, instance)}; a volume from a snapshot is "
                           "made on the snapshot's hypervisor", "instance")
        placed = snapshot or instance
        if zone is not None and placed is not None and _zone_of(session, placed.hypervisor_id) != zone.id:
            raise Conflict(f"{'snapshot' if snapshot else 'instance'} {placed.name!r} is not in zone {zone.name!r}",
                           "zone")
        quotas.check(session, caller.org_id, volumes=1, volume_gb=size_gb)
        volume = Volume(org_id=caller.org_id, name=body.name, size_gb=size_gb, zone_id=zone.id if zone else None,
                        status="creating")
        params: dict[str, object] = {"size_gb": size_gb}
        if snapshot is not None:
            # Its room is held now: a copy that cannot fit is refused before anything is made.
            if not frontend.scheduler.reserve(session, snapshot.hypervisor_id, Demand(disk_gb=size_gb)):
                raise Conflict(f"{_host(session, caller, snapshot)}, where snapshot {snapshot.name!r} is, has no "
                               f"room for {size_gb} GB more", "snapshot")
            volume.hypervisor_id, params["snapshot_id"] = snapshot.hypervisor_id, snapshot.id
        if instance is not None:
            params["instance_id"] = instance.id
        session.add(volume)
        session.flush()
        task = frontend.tasks.create(session, "volume.create", caller.org_id, caller.user_id, "volume", volume.id,
                                     params)
        accepted = Accepted[VolumeView](task=task_view(task, caller), resource=volume_view(session, caller, volume))
    frontend.tasks.start(task.id)
    return accepted


def _size(body: VolumeCreate, snapshot: Snapshot | None) -> int:
    if snapshot is None:
        if body.size_gb is None:
            raise Invalid("size_gb is required unless snapshot is given", "size_gb")
        return body.size_gb
    if snapshot.status != "available":
        raise Conflict(f"snapshot {snapshot.name!r} is {snapshot.status}; it must be available", "snapshot")
    if body.size_gb is not None and body.size_gb < snapshot.size_gb:
        raise Invalid(f"{body.size_gb} GB is smaller than snapshot {snapshot.name!r} ({snapshot.size_gb} GB)",
                      "size_gb")
    return body.size_gb or snapshot.size_gb


def _instance_for(session: Session, caller: Caller, ref: str) -> Instance:
    """An instance a volume may attach to now."""
    instance = find(session, Instance, ref, caller, "instance", "instance")
    if instance.status not in ATTACHABLE or instance.hypervisor_id is None:
        raise Conflict(f"instance {instance.name!r} is {instance.status}; it must be active or stopped", "instance")
    return instance


def _zone_of(session: Session, host_id: str | None) -> str | None:
    host = session.get(Hypervisor, host_id) if host_id else None
    return host.zone_id if host else None


@router.get("/volumes", response_model=Items[VolumeView], summary="List volumes")
def list_volumes(caller: CallerDep, frontend: FrontendDep, all_orgs: AllOrgsDep) -> Items[VolumeView]:
    with frontend.db.read() as session:
        rows = session.execute(owned(Volume, caller, all_orgs=all_orgs).order_by(Volume.created_at)).scalars()
        return Items(items=[volume_view(session, caller, v) for v in rows])


@router.get("/volumes/{volume}", response_model=VolumeView, summary="Show a volume by id or name")
def show_volume(volume: Ref, caller: CallerDep, frontend: FrontendDep) -> VolumeView:
    with frontend.db.read() as session:
        return volume_view(session, caller, find(session, Volume, volume, caller, "volume"))


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
        accepted = Accepted[VolumeView](task=task_view(task, caller), resource=volume_view(session, caller, volume))
    frontend.tasks.start(task.id)
    return accepted


def _attachable(session: Session, caller: Caller, volume: Volume, ref: str) -> Instance:
    instance = _instance_for(session, caller, ref)
    if volume.hypervisor_id is None:
        if volume.zone_id is not None and _zone_of(session, instance.hypervisor_id) != volume.zone_id:
            zone = session.get(Zone, volume.zone_id)
            raise Conflict(f"volume {volume.name!r} attaches only to instances in zone "
                           f"{zone.name if zone else volume.zone_id!r}, and instance {instance.name!r} is not in it",
                           "instance")
    elif volume.hypervisor_id != instance.hypervisor_id:
        raise Conflict(f"volume {volume.name!r} holds data on {_host(session, caller, volume)} and instance "
                       f"{instance.name!r} is on {_host(session, caller, instance)}; a volume stays on the "
                       "hypervisor it was first attached on (volumes are not moved between hypervisors): attach it "
                       "to an instance there, or create a new volume for this one", "instance")
    return instance


@router.post("/volumes/{volume}/attach", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[VolumeView],
             summary="Attach a volume to an instance (active or stopped)",
             description="A volume on no hypervisor yet is made on the instance's hypervisor first, and stays there. "
                         "A volume on a hypervisor (it holds data) attaches only to instances on that hypervisor: "
                         "one on another is refused (409, field instance) naming both hypervisors. Volumes are not "
                         "moved between hypervisors.")
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
