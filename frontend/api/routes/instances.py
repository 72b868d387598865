"""Instances: launched, powered, resized, imaged and deleted through tasks."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from sci import Targets

from ... import lifecycle, quotas
from ...auth import Caller, Role
from ...db.models import Flavor, Hypervisor, Image, Instance, Keypair, Port, ServerGroup, Volume
from ...errors import Conflict, Invalid, Unavailable
from ...hostalias import AS_SEEN, seen, shown
from ...hostops import INSTANCE_CONSOLE
from ..allorgs import AllOrgsDep
from ..deps import CallerDep, FrontendDep, leading_tree
from ..lookup import find, find_zone, get_owned, owned, unique_name
from ..nics import NicSpec, allocate_instance_ports
from ..refusals import refusals
from ..schemas import V1, Input, Items, Name, Ref, ResourceView, Text
from .images import ImageView
from .tasks import Accepted, task_view

router = APIRouter(prefix=V1, tags=["instances"])

MAX_USER_DATA = 64 * 1024


class InstanceCreate(Input):
    name: Name
    flavor: Ref
    image: Ref
    keypair: Ref | None = None
    user_data: Text | None = Field(default=None, max_length=MAX_USER_DATA, description="cloud-init user data")
    nics: list[NicSpec] = Field(default_factory=list, max_length=8)
    security_groups: list[Ref] | None = Field(default=None, max_length=16,
                                              description="for every nic that names none of its own")
    server_group: Ref | None = None
    zone: Ref | None = None


class Resize(Input):
    flavor: Ref


class ImageFrom(Input):
    name: Name = Field(description="The new image's name, unique among your organization's images")


class Stop(Input):
    timeout_s: int = Field(default=60, ge=0, le=3600, description="seconds of graceful shutdown before power off")


class PortBrief(BaseModel):
    id: str
    network_id: str
    subnet_id: str
    ip_address: str
    mac_address: str


class InstanceView(ResourceView):
    name: str
    flavor_id: str
    image_id: str
    keypair_id: str | None
    server_group_id: str | None
    zone_id: str | None
    vcpus: int
    memory_mb: int
    disk_gb: int
    power_state: str = Field(description="running, paused, shutoff or crashed, as its host told it: at once when "
                                         "the guest changes by itself (a crash, a shutdown from inside, a pause on "
                                         "a disk error), or found by the reconcile; missing if its host lost it. "
                                         "The status follows: paused and crashed are statuses too, and start "
                                         "resumes or boots such an instance again")
    fault: str | None = Field(description=f"Why its last task failed, or why its guest is not running (crashed: its "
                                          f"kernel panicked); {AS_SEEN}")
    #: the hypervisor's name; shown to admins only
    hypervisor: str | None
    host: str | None = Field(description=f"The hypervisor it is on, if any; {AS_SEEN}")
    ports: list[PortBrief]
    volumes: list[str]


def instance_view(session: Session, caller: Caller, instance: Instance) -> InstanceView:
    ports = session.execute(select(Port).where(Port.instance_id == instance.id).order_by(Port.created_at)).scalars()
    volumes = session.execute(select(Volume.id).where(Volume.instance_id == instance.id)).scalars()
    row = session.get(Hypervisor, instance.hypervisor_id) if instance.hypervisor_id else None
    host = row.name if row else None
    return InstanceView(
        id=instance.id, org_id=instance.org_id, status=instance.status, created_at=instance.created_at,
        updated_at=instance.updated_at, name=instance.name, flavor_id=instance.flavor_id, image_id=instance.image_id,
        keypair_id=instance.keypair_id, server_group_id=instance.server_group_id, zone_id=instance.zone_id,
        vcpus=instance.vcpus, memory_mb=instance.memory_mb, disk_gb=instance.disk_gb,
        power_state=instance.power_state, fault=shown(instance.fault, instance.org_id, caller.is_admin),
        hypervisor=host if caller.is_admin else None,
        host=seen(host, instance.org_id, caller.is_admin) if host else None,
        ports=[PortBrief(id=p.id, network_id=p.network_id, subnet_id=p.subnet_id, ip_address=p.ip_address,
                         mac_address=p.mac_address) for p in ports],
        volumes=list(volumes))


@router.post("/instances", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[InstanceView],
             summary="Launch an instance (answers with the launch task)",
             description="The flavor must hold the image: its disk_gb at least the image's min_disk_gb and its "
                         "memory_mb at least the image's min_memory_mb, else the launch is refused (422, field "
                         "flavor) and nothing is made. The instance's root disk is the flavor's disk_gb, whatever "
                         "the image's size: cloud-init's growpart grows the image's file system into it.")
def create_instance(body: InstanceCreate, caller: CallerDep, frontend: FrontendDep) -> Accepted[InstanceView]:
    caller.require(Role.member, "launching an instance")
    with frontend.db.transaction() as session:
        flavor = find(session, Flavor, body.flavor, caller, "flavor", "flavor", shared=True)
        image = find(session, Image, body.image, caller, "image", "image", shared=True)
        if image.status != "active":
            raise Invalid(f"image {image.name!r} is {image.status}; upload its file first", "image")
        _check_fits(flavor, image)
        keypair = find(session, Keypair, body.keypair, caller, "keypair", "keypair") if body.keypair else None
        group = find(session, ServerGroup, body.server_group, caller, "server group", "server_group") \
            if body.server_group else None
        zone = find_zone(session, body.zone) if body.zone else None
        quotas.check(session, caller.org_id, instances=1, vcpus=flavor.vcpus, memory_mb=flavor.memory_mb)
        instance = Instance(org_id=caller.org_id, name=body.name, flavor_id=flavor.id, image_id=image.id,
                            keypair_id=keypair.id if keypair else None, server_group_id=group.id if group else None,
                            zone_id=zone.id if zone else None, user_data=body.user_data, vcpus=flavor.vcpus,
                            memory_mb=flavor.memory_mb, disk_gb=flavor.disk_gb, status="building")
        session.add(instance)
        session.flush()
        nics = [nic if nic.security_groups is not None or body.security_groups is None
                else nic.model_copy(update={"security_groups": body.security_groups}) for nic in body.nics]
        allocate_instance_ports(session, caller, nics, instance.id)
        task = frontend.tasks.create(session, "instance.create", caller.org_id, caller.user_id, "instance",
                                     instance.id)
        accepted = Accepted[InstanceView](task=task_view(task, caller),
                                          resource=instance_view(session, caller, instance))
    frontend.tasks.start(task.id)
    return accepted


@router.get("/instances", response_model=Items[InstanceView], summary="List instances (oldest first)",
            description="With limit, one page of them: offset skips that many first.")
def list_instances(caller: CallerDep, frontend: FrontendDep, all_orgs: AllOrgsDep,
                   limit: int | None = Query(default=None, ge=1, le=1000, description="default: all of them"),
                   # bounded: the databases refuse an OFFSET past a 64-bit integer (the fuzzer's 500)
                   offset: int = Query(default=0, ge=0, le=2**31 - 1)) -> Items[InstanceView]:
    with frontend.db.read() as session:
        # The id breaks ties between instances created in one instant, so that pages neither overlap nor skip.
        query = (owned(Instance, caller, all_orgs=all_orgs).order_by(Instance.created_at, Instance.id)
                 .offset(offset).limit(limit))
        rows = session.execute(query).scalars()
        return Items(items=[instance_view(session, caller, i) for i in rows])


@router.get("/instances/{instance}", response_model=InstanceView, summary="Show an instance by id or name")
def show_instance(instance: Ref, caller: CallerDep, frontend: FrontendDep) -> InstanceView:
    with frontend.db.read() as session:
        return instance_view(session, caller, find(session, Instance, instance, caller, "instance"))


def _act(frontend: FrontendDep, caller: Caller, ref: str, action: str, params: dict[str, object] | None = None,
         kind: str | None = None) -> Accepted[InstanceView]:
    caller.require(Role.member, f"{action} of an instance")
    with frontend.db.transaction() as session:
        instance = find(session, Instance, ref, caller, "instance")
        instance = get_owned(session, Instance, instance.id, caller, "instance", lock=True)
        extra = dict(params or {})
        if action == "delete":
            busy = session.execute(select(Volume.name).where(Volume.instance_id == instance.id,
                                                             Volume.status.in_(("attaching", "detaching")))).first()
            if busy is not None:
                raise Conflict(f"volume {busy[0]!r} is being attached or detached; wait for its task", "status")
        if action == "resize":
            extra.update(_resize_params(session, caller, instance, str(extra.pop("flavor"))))
        extra["from"] = lifecycle.begin(lifecycle.INSTANCE, "instance", instance, action)
        task = frontend.tasks.create(session, kind or f"instance.{action}", caller.org_id, caller.user_id,
                                     "instance", instance.id, extra)
        accepted = Accepted[InstanceView](task=task_view(task, caller),
                                          resource=instance_view(session, caller, instance))
    frontend.tasks.start(task.id)
    return accepted


def _check_fits(flavor: Flavor, image: Image) -> None:
    """Refuse a flavor too small for the image: its disk must hold the image's virtual size (the
    instance's disk is the flavor's, never smaller), its memory the image's declared minimum."""
    if image.min_disk_gb is not None and flavor.disk_gb < image.min_disk_gb:
        raise Invalid(f"flavor {flavor.name!r} has a disk of {flavor.disk_gb} GB; image {image.name!r} needs "
                      f"min_disk_gb {image.min_disk_gb} (its virtual size is {image.virtual_size_bytes} bytes)",
                      "flavor")
    if image.min_memory_mb is not None and flavor.memory_mb < image.min_memory_mb:
        raise Invalid(f"flavor {flavor.name!r} has {flavor.memory_mb} MB of memory; image {image.name!r} needs "
                      f"min_memory_mb {image.min_memory_mb}", "flavor")


def _resize_params(session: Session, caller: Caller, instance: Instance, ref: str) -> dict[str, object]:
    flavor = find(session, Flavor, ref, caller, "flavor", "flavor", shared=True)
    if flavor.disk_gb < instance.disk_gb:
        raise Invalid(f"a disk can only grow: flavor {flavor.name!r} has {flavor.disk_gb} GB, the instance "
                      f"{instance.disk_gb} GB", "flavor")
    if flavor.id == instance.flavor_id:
        raise Invalid(f"the instance already has flavor {flavor.name!r}", "flavor")
    image = session.get(Image, instance.image_id)
    if image is not None:  # always, as an image in use cannot be deleted
        _check_fits(flavor, image)
    quotas.check(session, caller.org_id, vcpus=flavor.vcpus - instance.vcpus,
                 memory_mb=flavor.memory_mb - instance.memory_mb)
    return {"flavor_id": flavor.id, "vcpus": flavor.vcpus, "memory_mb": flavor.memory_mb, "disk_gb": flavor.disk_gb,
            "old": {"vcpus": instance.vcpus, "memory_mb": instance.memory_mb, "disk_gb": instance.disk_gb}}


@router.delete("/instances/{instance}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[InstanceView],
               summary="Delete an instance (its own ports go with it; volumes are detached and kept)")
def delete_instance(instance: Ref, caller: CallerDep, frontend: FrontendDep) -> Accepted[InstanceView]:
    return _act(frontend, caller, instance, "delete")


@router.post("/instances/{instance}/start", status_code=status.HTTP_202_ACCEPTED,
             response_model=Accepted[InstanceView], summary="Start a stopped instance")
def start_instance(instance: Ref, caller: CallerDep, frontend: FrontendDep) -> Accepted[InstanceView]:
    return _act(frontend, caller, instance, "start")


@router.post("/instances/{instance}/stop", status_code=status.HTTP_202_ACCEPTED,
             response_model=Accepted[InstanceView],
             summary="Stop an instance: ACPI shutdown, then power off after timeout_s")
def stop_instance(instance: Ref, caller: CallerDep, frontend: FrontendDep,
                  body: Stop | None = None) -> Accepted[InstanceView]:
    return _act(frontend, caller, instance, "stop", {"timeout_s": (body or Stop()).timeout_s})


@router.post("/instances/{instance}/reboot", status_code=status.HTTP_202_ACCEPTED,
             response_model=Accepted[InstanceView], summary="Reboot a running instance")
def reboot_instance(instance: Ref, caller: CallerDep, frontend: FrontendDep) -> Accepted[InstanceView]:
    return _act(frontend, caller, instance, "reboot")


@router.post("/instances/{instance}/resize", status_code=status.HTTP_202_ACCEPTED,
             response_model=Accepted[InstanceView],
             summary="Resize to another flavor on the same hypervisor (cold: the host stops and restarts it)")
def resize_instance(instance: Ref, body: Resize, caller: CallerDep, frontend: FrontendDep) -> Accepted[InstanceView]:
    return _act(frontend, caller, instance, "resize", {"flavor": body.flavor})


@router.post("/instances/{instance}/image", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted[ImageView],
             summary="Make an image of a stopped instance's disk (answers with the task and the queued image)",
             description="The instance must be stopped: an active one is refused (409, field status: stop the "
                         "instance first), as its disk would change while it is copied. Its hypervisor flattens "
                         "the instance's root disk into a self-contained qcow2 (no backing file) and uploads it; "
                         "the file is checked and stored like an uploaded one, its virtual size (the instance's "
                         "disk_gb) becoming the image's min_disk_gb, and the image goes from queued (saving while "
                         "the file arrives) to active: a private image of your organization, launchable on any "
                         "hypervisor. It keeps the kernel, initrd and min_memory_mb of the instance's image. The "
                         "instance is imaging meanwhile, then stopped again. If the task fails, nothing of the "
                         "image is kept (its row and any file are removed; the task says why) and the instance is "
                         "stopped as before, with the reason in its fault.",
             responses=refusals(409))
def image_instance(instance: Ref, body: ImageFrom, caller: CallerDep, frontend: FrontendDep) -> Accepted[ImageView]:
    caller.require(Role.member, "making an image of an instance")
    with frontend.db.transaction() as session:
        row = find(session, Instance, instance, caller, "instance")
        row = get_owned(session, Instance, row.id, caller, "instance", lock=True)
        if row.status == "active":
            raise Conflict(f"instance {row.name!r} is active; stop the instance first: an image is made only of a "
                           "stopped instance's disk", "status")
        before = lifecycle.begin(lifecycle.INSTANCE, "instance", row, "image")
        unique_name(session, Image, body.name, "image", org_id=caller.org_id)
        source = session.get(Image, row.image_id)
        assert source is not None  # an image in use cannot be deleted
        image = Image(org_id=caller.org_id, status="queued", name=body.name, format="qcow2", public=False,
                      min_memory_mb=source.min_memory_mb, kernel_id=source.kernel_id, initrd_id=source.initrd_id,
                      source_instance_id=row.id)
        session.add(image)
        session.flush()
        task = frontend.tasks.create(session, "image.create", caller.org_id, caller.user_id, "image", image.id,
                                     {"instance_id": row.id, "from": before})
        accepted = Accepted[ImageView](task=task_view(task, caller), resource=ImageView.model_validate(image))
    frontend.tasks.start(task.id)
    return accepted


class ConsoleView(BaseModel):
    #: the end of the instance's serial console log
    log: str
    #: where its VNC display listens, on the hypervisor's loopback (admins only: reach it over SSH)
    vnc: str | None


@router.get("/instances/{instance}/console", response_model=ConsoleView,
            summary="The end of an instance's serial console log (and, for admins, where its VNC display is)",
            responses=refusals(409, 503))
def console(instance: Ref, caller: CallerDep, frontend: FrontendDep,
            size: int = Query(default=65536, ge=1, le=1 << 20, alias="bytes")) -> ConsoleView:
    with frontend.db.read() as session:
        row = find(session, Instance, instance, caller, "instance")
        host = session.get(Hypervisor, row.hypervisor_id) if row.hypervisor_id else None
    if host is None:
        raise Conflict(f"instance {row.name!r} is {row.status} and on no hypervisor", "instance")
    leading_tree(frontend, "reading a console")
    result = frontend.submit(INSTANCE_CONSOLE, {"instance_id": row.id, "bytes": size},
                             Targets.to(host.name), 15.0).wait(20.0).get(host.name)
    if result is None or not result.ok or not isinstance(result.payload, dict):
        why = result.message or result.status.name.lower() if result else "no answer"
        raise Unavailable(f"the hypervisor did not return the console: {why}")
    port = result.payload.get("vnc_port")
    vnc = f"{host.name}:127.0.0.1:{port}" if caller.is_admin and port else None
    return ConsoleView(log=str(result.payload.get("log", "")), vnc=vnc)
