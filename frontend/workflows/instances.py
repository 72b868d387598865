"""Instance tasks: launch (with placement and retries), delete, power actions and resize."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Database
from ..db.models import Hypervisor, Image, Instance, Keypair, Port, Task, Volume
from ..enrolment import is_revoked
from ..imagelinks import ImageLinks
from ..hostops import HOST_OP_TIMEOUT, INSTANCE_CREATE, INSTANCE_DELETE, INSTANCE_RESIZE, POWER_OPS, instance_spec
from ..ipam import release_instance_ports
from ..hostalias import mention
from ..netstate import group_audience, instance_groups, instance_networks
from ..scheduler import Demand, OnlyAwayHosts, Scheduler
from ..tasks import AWAY, HostResult, HostsAway, TaskContext, TaskFailed, Workflow
from .network import errors, push

__all__ = ["workflows"]

#: seconds for the best-effort clean-up of a launch that timed out on a host
CLEANUP_TIMEOUT = 60.0
#: the status an instance settles in after each power action
SETTLED = {"start": "active", "stop": "stopped", "reboot": "active"}


def _instance(session: Session, instance_id: str) -> Instance:
    instance = session.get(Instance, instance_id)
    if instance is None:
        raise TaskFailed(f"instance {instance_id} no longer exists")
    return instance


def _host_name(session: Session, instance: Instance) -> str | None:
    if instance.hypervisor_id is None:
        return None
    host = session.get(Hypervisor, instance.hypervisor_id)
    return host.name if host else None


class _Base:
    def __init__(self, db: Database, scheduler: Scheduler) -> None:
        self.db = db
        self.scheduler = scheduler

    def _read(self, instance_id: str) -> tuple[Instance, str | None]:
        with self.db.read() as session:
            instance = _instance(session, instance_id)
            return instance, _host_name(session, instance)


class Launch(_Base):
    """Place the instance, build it on the host; if the host fails, release it and try another, up to
    ``max_attempts`` failures (a host lost from the tree meanwhile spends none for ``host_wait_s``)."""

    def __init__(self, db: Database, scheduler: Scheduler, links: ImageLinks) -> None:
        super().__init__(db, scheduler)
        #: hosts fetch the instance's image through a signed link
        self.links = links

    def run(self, ctx: TaskContext, task: Task) -> None:
        iid = task.resource_id
        settings = self.scheduler.settings
        tried: list[str] = []
        reasons: list[str] = []
        spent = attempt = 0
        while spent < settings.max_attempts:
            try:
                placed = ctx.once(f"place.{attempt}", lambda s: self._place(s, iid, tried))
            except OnlyAwayHosts as exc:
                if not ctx.waited_enough(task.created_at):
                    raise HostsAway(exc.hosts, f"placement waits for the tree: {exc}") from None
                raise TaskFailed(f"no hypervisor with room for it is attached to the tree ({exc})") from None
            if placed is None:
                why = "no hypervisor has room for it" + (" after " + "; ".join(reasons) if reasons else "")
                raise TaskFailed(why)
            host = placed["name"]
            # A host that is away fails this attempt at once: the next one goes elsewhere.
            result = ctx.command(f"launch.{attempt}", INSTANCE_CREATE, self._spec(iid), [host],
                                 timeout=settings.launch_timeout_s,
                                 refresh=lambda recorded: relinked(recorded, self.links), wait_for_hosts=False)[host]
            networks = self._networks(iid)
            if result.ok:
                # Its host plugs its ports; its networks' other hosts learn where they are.
                wired = push(ctx, f"wire.{attempt}", networks).get(host, HostResult("ok")) if networks else None
                if wired is None or wired.ok or wired.status != "error":
                    ctx.once("activate", lambda s: self._activate(s, iid, result.payload))
                    _push_members(ctx, ctx.once("groups", lambda s: instance_groups(s, iid)))
                    return
                result = HostResult(wired.status, f"its network: {wired.describe()}", wired.exit_status)
            reasons.append(f"{mention(host)}: {result.describe()}")
            # Whatever the failure (silence, a backend that died mid-op, a clean-up that itself
            # failed), the host may hold part of it: deleting is idempotent, so always ask.  Not
            # waiting for a host that is away: the reconcile reaps what it holds of this attempt.
            ctx.command(f"cleanup.{attempt}", INSTANCE_DELETE, {"instance_id": iid}, [host],
                        timeout=CLEANUP_TIMEOUT, wait_for_hosts=False)
            ctx.once(f"release.{attempt}", lambda s: self._release(s, iid))
            if networks:
                push(ctx, f"unwire.{attempt}", networks, [host])  # what the host built of them for it goes
            tried.append(placed["id"])
            # A host the tree lost mid-launch (its agent restarting, a busy machine's false alarm)
            # says nothing of this instance: such an attempt is free for as long as a step would
            # wait for a host.  Journalled, so a replay after a restart counts as the first run did.
            if result.status not in AWAY or ctx.once(f"spent.{attempt}", lambda s: ctx.waited_enough(task.created_at)):
                spent += 1
            attempt += 1
        raise TaskFailed(f"the launch failed on {len(reasons)} hypervisors: " + "; ".join(reasons))

    def _networks(self, iid: str) -> list[str]:
        """The networks of the instance's ports, which stay as they are while it is launched: read, not
        journalled, so the same on a replay."""
        with self.db.read() as session:
            return instance_networks(session, iid)

    def _place(self, session: Session, iid: str, tried: list[str]) -> dict[str, str] | None:
        instance = _instance(session, iid)
        host = self.scheduler.place(session, Demand.of(instance), instance.zone_id, instance.server_group_id,
                                       frozenset(tried), member_id=instance.id)
        if host is None:
            return None
        instance.hypervisor_id = host.id
        return {"id": host.id, "name": host.name}

    def _spec(self, iid: str) -> dict[str, Any]:
        with self.db.read() as session:
            instance = _instance(session, iid)
            image = session.get(Image, instance.image_id)
            if image is None:
                raise TaskFailed("the instance's image was deleted")
            kernel = session.get(Image, image.kernel_id) if image.kernel_id else None
            initrd = session.get(Image, image.initrd_id) if image.initrd_id else None
            keypair = session.get(Keypair, instance.keypair_id) if instance.keypair_id else None
            ports = list(session.execute(select(Port).where(Port.instance_id == iid).order_by(Port.created_at))
                         .scalars())
            volumes = list(session.execute(select(Volume).where(Volume.instance_id == iid)).scalars())
            return {"instance": instance_spec(instance, image, kernel, initrd, keypair, ports, volumes,
                                              self.links)}

    def _activate(self, session: Session, iid: str, payload: Any) -> None:
        instance = _instance(session, iid)
        instance.status, instance.fault = "active", None
        instance.power_state = (payload or {}).get("power_state", "running") if isinstance(payload, dict) else "running"

    def _release(self, session: Session, iid: str) -> None:
        instance = _instance(session, iid)
        if instance.hypervisor_id is not None:
            self.scheduler.release(session, instance.hypervisor_id, Demand.of(instance))
            instance.hypervisor_id = None

    def failed(self, session: Session, task: Task, reason: str) -> None:
        instance = session.get(Instance, task.resource_id)
        if instance is not None:
            self._release(session, instance.id)
            instance.status, instance.fault = "error", reason


def relinked(body: dict[str, Any], links: ImageLinks) -> dict[str, Any]:
    """``body``, a launch's recorded command, with a new signed link to each of its files: sent again
    after a long frontend outage, the links it had may have expired (their ttl covers one launch,
    not an outage).  The rest stays as recorded."""
    spec = dict(body["instance"])
    for key in ("image", "kernel", "initrd"):
        if spec.get(key) is not None:
            spec[key] = {**spec[key], "url": links.url(spec[key]["id"])}
    return {**body, "instance": spec}


def _push_members(ctx: TaskContext, groups: list[str]) -> None:
    """The hosts whose ports' rules name these groups as remote learn the groups' members anew (an
    instance's ports joined or left them).  A host that fails it catches up at its next sync."""
    networks, hosts = ctx.once("members.plan", lambda s: group_audience(s, members_of=groups))
    if hosts:
        push(ctx, "members", networks, only=hosts)


class Delete(_Base):
    """Delete on the host (if it ever got one), then forget it: capacity, ports, volume attachments."""

    def run(self, ctx: TaskContext, task: Task) -> None:
        iid = task.resource_id
        host = self._host_to_ask(ctx, task)
        networks: list[str] = ctx.once("networks", lambda s: instance_networks(s, iid))
        groups: list[str] = ctx.once("groups", lambda s: instance_groups(s, iid))
        if host is not None:
            result = ctx.command("delete", INSTANCE_DELETE, {"instance_id": iid}, [host], timeout=HOST_OP_TIMEOUT)[host]
            if not result.ok:
                raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("forget", lambda s: self._forget(s, iid))
        _push_members(ctx, groups)
        if networks:
            # Its ports are gone from their networks' hosts, and from its own host with them.
            failed = errors(push(ctx, "unwire", networks, [host] if host else []))
            if failed:
                raise TaskFailed("the instance is deleted, but its network could not be updated on: "
                                 + "; ".join(failed))

    def _host_to_ask(self, ctx: TaskContext, task: Task) -> str | None:
        """The instance's host, None if it has none or its key is revoked (gone for good, its guests
        with it: nothing to ask it, nothing to unwire there).  Once the task has forgotten the instance
        (a delete resumed after a restart, with only its network pushes left), the host it sent the
        delete to."""
        with self.db.read() as session:
            instance = session.get(Instance, task.resource_id)
            if instance is not None:
                host = _host_name(session, instance)
                return None if host is None or is_revoked(session, host) else host
        return next(iter(ctx.sent_to("delete")), None)

    def _forget(self, session: Session, iid: str) -> None:
        instance = _instance(session, iid)
        if instance.hypervisor_id is not None:
            self.scheduler.release(session, instance.hypervisor_id, Demand.of(instance))
        release_instance_ports(session, iid)
        for volume in session.execute(select(Volume).where(Volume.instance_id == iid)).scalars():
            volume.instance_id, volume.status = None, "available"
        session.flush()
        session.delete(instance)

    def failed(self, session: Session, task: Task, reason: str) -> None:
        instance = session.get(Instance, task.resource_id)
        if instance is not None:
            instance.status, instance.fault = "error", f"delete failed: {reason}"


class Power(_Base):
    """start, stop or reboot: one op on the instance's host."""

    def __init__(self, db: Database, scheduler: Scheduler, action: str) -> None:
        super().__init__(db, scheduler)
        self.action = action

    def run(self, ctx: TaskContext, task: Task) -> None:
        iid = task.resource_id
        _, host = self._read(iid)
        if host is None:
            raise TaskFailed("the instance has no hypervisor")
        body: dict[str, Any] = {"instance_id": iid}
        if self.action == "stop":
            body["timeout_s"] = task.params.get("timeout_s", 60)
        result = ctx.command(self.action, POWER_OPS[self.action], body, [host], timeout=HOST_OP_TIMEOUT)[host]
        if not result.ok:
            raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("settle", lambda s: self._settle(s, iid, result.payload))

    def _settle(self, session: Session, iid: str, payload: Any) -> None:
        instance = _instance(session, iid)
        instance.status, instance.fault = SETTLED[self.action], None
        default = "shutoff" if self.action == "stop" else "running"
        instance.power_state = payload.get("power_state", default) if isinstance(payload, dict) else default

    def failed(self, session: Session, task: Task, reason: str) -> None:
        instance = session.get(Instance, task.resource_id)
        if instance is not None:
            instance.status, instance.fault = task.params.get("from", "error"), f"{self.action} failed: {reason}"


class Resize(_Base):
    """Cold resize on the same host: hold the extra room first, then change the instance."""

    def run(self, ctx: TaskContext, task: Task) -> None:
        iid, p = task.resource_id, task.params
        instance, host = self._read(iid)
        if host is None or instance.hypervisor_id is None:
            raise TaskFailed("the instance has no hypervisor")
        grow = Demand(p["vcpus"], p["memory_mb"], p["disk_gb"]) - Demand(p["old"]["vcpus"], p["old"]["memory_mb"],
                                                                          p["old"]["disk_gb"])
        host_id = instance.hypervisor_id
        if not ctx.once("reserve", lambda s: self.scheduler.reserve(s, host_id, grow)):
            raise TaskFailed(f"{mention(host)} has no room for the new size; stop other instances there or delete them")
        body = {"instance_id": iid, "vcpus": p["vcpus"], "memory_mb": p["memory_mb"], "disk_gb": p["disk_gb"]}
        result = ctx.command("resize", INSTANCE_RESIZE, body, [host], timeout=HOST_OP_TIMEOUT)[host]
        if not result.ok:
            ctx.once("unreserve", lambda s: self.scheduler.release(s, host_id, grow))
            raise TaskFailed(f"{mention(host)}: {result.describe()}")
        ctx.once("apply", lambda s: self._apply(s, iid, p, result.payload))

    def _apply(self, session: Session, iid: str, p: dict[str, Any], payload: Any) -> None:
        instance = _instance(session, iid)
        instance.flavor_id, instance.vcpus, instance.memory_mb, instance.disk_gb = (
            p["flavor_id"], p["vcpus"], p["memory_mb"], p["disk_gb"])
        instance.status, instance.fault = p["from"], None
        if isinstance(payload, dict) and "power_state" in payload:
            instance.power_state = payload["power_state"]

    def failed(self, session: Session, task: Task, reason: str) -> None:
        instance = session.get(Instance, task.resource_id)
        if instance is not None:
            instance.status, instance.fault = task.params.get("from", "error"), f"resize failed: {reason}"


def workflows(db: Database, scheduler: Scheduler, links: ImageLinks) -> dict[str, Workflow]:
    flows: dict[str, Workflow] = {"instance.create": Launch(db, scheduler, links),
                                  "instance.delete": Delete(db, scheduler),
                                  "instance.resize": Resize(db, scheduler)}
    for action in POWER_OPS:
        flows[f"instance.{action}"] = Power(db, scheduler, action)
    return flows
