"""The compute ops' semantics (``docs/ops.md``) on top of ``Hypervisor``.

Every op is idempotent: a create of an instance that exists converges on it, a delete of one
that is absent succeeds.  A create that fails removes every piece it made (domain, overlay,
seed ISO) before raising.  Ops on one instance (or volume) run one at a time; ops on
different ones run concurrently on the registry's worker threads.

Per instance, on this host:

- the domain, named by the instance id and carrying our metadata element;
- ``inst-<id>.qcow2`` in the ``cloudland`` pool: the root disk, an overlay over the cached image;
- ``<instances_dir>/<id>/``: ``seed.iso`` (cloud-init NoCloud) and ``console.log`` (serial console);
  while an image is made of it, ``image-<image id>.qcow2``, its flattened root disk on its way to the
  frontend.

Volumes are ``vol-<id>.qcow2`` in the pool, and their snapshots ``snap-<id>.qcow2``: full copies
with no backing file, so that a snapshot, its volume and the volumes made from it are deleted in
any order.  Disks: vda the root, then the volumes from vdb; the seed is a CD-ROM on virtio-scsi (sda).
"""

from __future__ import annotations

import contextlib
import enum
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import structlog

from service.config import ComputeSection

from . import domain, qemuimg, seed
from .domain import DirectBoot, Disk, DomainSpec, DomainType, Nic
from .domainevents import DomainChange
from .exceptions import BadRequest, ComputeError, Conflict, HypervisorError, NoGuestAgent, NotFound
from .hypervisor import ConsoleStream, DomainState, Hypervisor, Volume
from .imagecache import ImageCache, Sent
from .locks import KeyedLocks
from .spec import ImageFile, InstanceSpec

__all__ = ["ComputeDriver", "Consistency", "Console", "DriverSettings", "PowerState"]

log = structlog.get_logger("backend.compute")

GIB = 1 << 30
SEED_FILE = "seed.iso"
CONSOLE_FILE = "console.log"
ROOT_TARGET, SEED_TARGET = "vda", "sda"
#: targets a volume may take, in order (the seed is a CD-ROM, off the virtio bus)
_VOLUME_TARGETS = tuple(f"vd{letter}" for letter in "bcdefghijklmnopqrstuvwxyz")


class PowerState(enum.Enum):
    """What ``docs/ops.md`` reports."""

    RUNNING = "running"
    #: stopped by the hypervisor (an I/O error, a full disk) or by hand: it holds the host's
    #: resources but runs nothing
    PAUSED = "paused"
    SHUTOFF = "shutoff"
    #: its kernel panicked (pvpanic) or QEMU died under it: off, until started again
    CRASHED = "crashed"

    @classmethod
    def of(cls, state: DomainState | None) -> PowerState:
        if state is DomainState.CRASHED:
            return cls.CRASHED
        if state is None or state.is_off:
            return cls.SHUTOFF
        return cls.PAUSED if state in (DomainState.PAUSED, DomainState.PMSUSPENDED) else cls.RUNNING


class Consistency(enum.Enum):
    """What a volume snapshot holds of a guest's writes (``docs/ops.md``)."""

    #: the guest agent froze the guest's file systems: every write they had accepted is in it
    FROZEN = "frozen"
    #: a running guest without an answering agent: what a power cut at that moment would leave
    CRASH_CONSISTENT = "crash-consistent"
    #: no guest had the volume open: everything written is in it
    OFFLINE = "offline"


#: the notice of a guest's power state changed by anything but an op (``docs/ops.md``)
POWER_NOTICE = "instance.power"


def power_notice(change: DomainChange) -> dict[str, Any]:
    """The body of an ``instance.power`` notice: which instance, its power state now, why, and when."""
    return {"instance": change.name, "power_state": PowerState.of(change.state).value, "cause": change.cause,
            "at": time.time()}


@dataclass(frozen=True, slots=True)
class DriverSettings:
    instances_dir: Path
    domain_type: DomainType
    #: kernel command line for instances booted from a kernel and initrd
    cmdline: str = ComputeSection.cmdline
    #: how long stop (without its own timeout) and resize let the guest shut down before powering off
    stop_timeout_s: float = 60.0
    #: the graceful part of a reboot: short, a reboot must not hang on a guest that ignores ACPI
    reboot_timeout_s: float = 10.0
    #: how often a stop presses the (ACPI) power button again while the guest is up
    shutdown_retry_s: float = 5.0
    #: how often a stop (or a live detach) looks whether the guest is done
    poll_interval_s: float = 0.25
    #: how long a live detach waits for the guest to let go of the disk
    detach_timeout_s: float = 15.0
    #: how long merging a live snapshot's overlay back into its volume may take
    merge_timeout_s: float = 600.0
    #: how long flattening a root disk into an image may take (half what the frontend waits for the
    #: whole op: the upload gets the rest)
    flatten_timeout_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class Console:
    #: the end of the serial console's log
    log: str
    #: the VNC server's port on 127.0.0.1; None while shut off
    vnc_port: int | None


def overlay_name(instance_id: str) -> str:
    return f"inst-{instance_id}.qcow2"


def volume_name(volume_id: str) -> str:
    return f"vol-{volume_id}.qcow2"


def snapshot_name(snapshot_id: str) -> str:
    return f"snap-{snapshot_id}.qcow2"


class ComputeDriver:
    def __init__(self, hypervisor: Hypervisor, images: ImageCache, settings: DriverSettings) -> None:
        self._hv = hypervisor
        self._images = images
        self.settings = settings
        self._instance_locks = KeyedLocks()
        self._volume_locks = KeyedLocks()
        self._snapshot_locks = KeyedLocks()

    def instance_dir(self, instance_id: str) -> Path:
        return self.settings.instances_dir / instance_id

    # --- instances -----------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> PowerState:
        instance_id = spec.instance_id
        with self._instance_locks.hold(instance_id):
            state = self._hv.state(instance_id)
            if state is not None:
                # A replay, or a retry after a lost answer: converge rather than fail or rebuild.
                self._require_ours(instance_id)
                log.info("instance_exists", instance=instance_id, state=state.value)
                return self._start(instance_id, state)
            started = time.monotonic()
            try:
                self._build(spec)
            except BaseException as exc:
                leftovers = self._cleanup_after_failure(instance_id)
                log.warning("instance_create_failed", instance=instance_id, error=str(exc), leftovers=leftovers)
                if not isinstance(exc, ComputeError):
                    raise
                message = f"create instance {instance_id}: {exc}"
                if leftovers:
                    message += f" (and cleaning up failed: {leftovers}; instance.delete retries it)"
                raise ComputeError(message, exc.exit_status) from exc
            power = PowerState.of(self._hv.state(instance_id))
            log.info("instance_created", instance=instance_id, domain_type=self.settings.domain_type,
                     vcpus=spec.vcpus, memory_mb=spec.memory_mb, disk_gb=spec.disk_gb,
                     seconds=round(time.monotonic() - started, 3))
            return power

    def _build(self, spec: InstanceSpec) -> None:
        instance_id = spec.instance_id
        if len(spec.volume_ids) > len(_VOLUME_TARGETS):
            raise BadRequest(f"instance {instance_id}: at most {len(_VOLUME_TARGETS)} volumes can be attached")
        # Until the overlay and the definition name them, only the pin keeps the files from eviction.
        files = [f.id for f in (spec.image, spec.kernel, spec.initrd) if f is not None]
        with self._images.pinned(files):
            self._build_pinned(spec)

    def _build_pinned(self, spec: InstanceSpec) -> None:
        instance_id = spec.instance_id
        image = self._fetch(spec.image)
        # An overlay smaller than its image would cut off the end of the guest's file system.
        needed = self._images.virtual_size(spec.image.id, spec.image.format)
        if spec.disk_gb * GIB < needed:
            raise BadRequest(f"a disk of {spec.disk_gb} GB is smaller than image {spec.image.id}, whose virtual "
                             f"size is {needed} bytes")
        boot = None
        if spec.kernel is not None:
            initrd = self._fetch(spec.initrd) if spec.initrd is not None else None
            boot = DirectBoot(self._fetch(spec.kernel), initrd, self.settings.cmdline)
        # An overlay without a domain is what a backend killed mid-create left: start afresh.
        self._hv.delete_volume(overlay_name(instance_id))
        overlay = self._hv.create_overlay(overlay_name(instance_id), image, spec.image.format, spec.disk_gb * GIB)
        volumes = [self._volume_disk(volume_id, target) for volume_id, target in zip(spec.volume_ids, _VOLUME_TARGETS)]
        directory = self.instance_dir(instance_id)
        seed_path = directory / SEED_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            seed.write(seed_path, seed.build(instance_id, spec.name, spec.ssh_keys, spec.user_data,
                                             [port.mac for port in spec.ports]))
        except OSError as exc:
            raise HypervisorError(f"write the seed ISO {seed_path}: {exc}") from exc
        self._hv.define(domain.build(DomainSpec(
            instance_id=instance_id, host=self._hv.host, title=spec.name, vcpus=spec.vcpus, memory_mb=spec.memory_mb,
            domain_type=self.settings.domain_type,
            disks=(Disk(overlay, "qcow2", ROOT_TARGET), Disk(seed_path, "raw", SEED_TARGET, cdrom=True), *volumes),
            nics=tuple(Nic(port.mac, domain.tap_name(port.id)) for port in spec.ports),
            console_log=directory / CONSOLE_FILE, boot=boot)))
        self._hv.start(instance_id)

    def _fetch(self, image: ImageFile) -> Path:
        return self._images.ensure(image.id, image.url, image.checksum, image.format)

    def _volume_disk(self, volume_id: str, target: str) -> Disk:
        volume = self._hv.volume(volume_name(volume_id))
        if volume is None:
            raise NotFound(f"volume {volume_id} is not on this host")
        return Disk(volume.path, "qcow2", target, serial=volume_id)

    def _cleanup_after_failure(self, instance_id: str) -> str:
        """Remove what a failed create made; what could not be removed, in words ("" if nothing)."""
        try:
            self._remove(instance_id, self._hv.state(instance_id))
        except ComputeError as exc:
            return str(exc)
        return ""

    def delete(self, instance_id: str) -> None:
        with self._instance_locks.hold(instance_id):
            state = self._hv.state(instance_id)
            if state is not None:
                self._require_ours(instance_id)
            self._remove(instance_id, state)
            log.info("instance_deleted", instance=instance_id)

    def _remove(self, instance_id: str, state: DomainState | None) -> None:
        """Power off and undefine the domain (in ``state``, as just read), delete the overlay and the
        instance's files, whichever exist.

        Volumes stay: undefining a domain leaves its disks' files alone.  The state is not read again:
        a running guest burns CPU until it is destroyed, so every libvirt call before that counts
        twice on a loaded host.
        """
        if state is not None:
            if not state.is_off:
                self._power_off(instance_id)
            self._hv.undefine(instance_id)
        self._hv.delete_volume(overlay_name(instance_id))
        directory = self.instance_dir(instance_id)
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise HypervisorError(f"remove {directory}: {exc}") from exc

    def start(self, instance_id: str) -> PowerState:
        with self._instance_locks.hold(instance_id):
            return self._start(instance_id, self._state_of_ours(instance_id))

    def _start(self, instance_id: str, state: DomainState) -> PowerState:
        if state.is_off:
            self._hv.start(instance_id)
            log.info("instance_started", instance=instance_id)
        elif state is DomainState.PAUSED:
            self._hv.resume(instance_id)
            log.info("instance_resumed", instance=instance_id)
        return PowerState.of(self._hv.state(instance_id))

    def stop(self, instance_id: str, timeout_s: float | None = None) -> PowerState:
        with self._instance_locks.hold(instance_id):
            state = self._state_of_ours(instance_id)
            self._stop(instance_id, state, self.settings.stop_timeout_s if timeout_s is None else timeout_s)
            return PowerState.of(self._hv.state(instance_id))

    def _stop(self, instance_id: str, state: DomainState, timeout_s: float) -> None:
        """ACPI shutdown, then power off if the guest is still up after ``timeout_s``."""
        if state.is_off:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            # Pressed again now and then: a guest still booting has nothing listening to the
            # first press yet, and would otherwise always be powered off.
            self._request_shutdown(instance_id)
            interval = min(self.settings.shutdown_retry_s, max(0.0, deadline - time.monotonic()))
            if self._poll(lambda: self._is_off(instance_id), interval):
                log.info("instance_stopped", instance=instance_id, forced=False)
                return
            if time.monotonic() >= deadline:
                break
        self._power_off(instance_id)
        log.info("instance_stopped", instance=instance_id, forced=True, timeout_s=timeout_s)

    def _request_shutdown(self, instance_id: str) -> None:
        try:
            self._hv.shutdown(instance_id)
        except Conflict:
            if not self._is_off(instance_id):  # else it went off on its own meanwhile
                raise

    def _power_off(self, instance_id: str) -> None:
        try:
            self._hv.destroy(instance_id)
        except Conflict:
            if not self._is_off(instance_id):
                raise

    def _is_off(self, instance_id: str) -> bool:
        state = self._hv.state(instance_id)
        return state is None or state.is_off

    def _poll(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Whether ``done()`` became true within ``timeout_s``, asking every ``poll_interval_s``.

        libvirt's lifecycle events would need an event loop thread; a guest's shutdown takes
        seconds, so asking a few times a second costs nothing and keeps the driver simple.
        """
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.settings.poll_interval_s, remaining))
        return True

    def reboot(self, instance_id: str) -> PowerState:
        """A stop (short grace, then power off) and a start: it ends running whatever the guest does."""
        with self._instance_locks.hold(instance_id):
            state = self._state_of_ours(instance_id)
            self._stop(instance_id, state, self.settings.reboot_timeout_s)
            self._hv.start(instance_id)
            log.info("instance_rebooted", instance=instance_id)
            return PowerState.of(self._hv.state(instance_id))

    def resize(self, instance_id: str, vcpus: int, memory_mb: int, disk_gb: int) -> PowerState:
        """Cold: stop, grow the root disk, redefine with the new size, start again if it was running.

        If any step fails the old definition comes back (and the instance runs again if it ran):
        the frontend then keeps the old size.  Only a disk already grown stays grown: it cannot shrink.
        """
        with self._instance_locks.hold(instance_id):
            state = self._state_of_ours(instance_id)
            overlay = self._hv.volume(overlay_name(instance_id))
            if overlay is None:
                raise NotFound(f"instance {instance_id} has no root disk on this host")
            capacity = disk_gb * GIB
            if capacity < overlay.capacity_bytes:  # refused before anything is touched
                raise BadRequest(f"instance {instance_id}: a disk only grows; it has "
                                 f"{overlay.capacity_bytes / GIB:g} GB, {disk_gb} GB asked")
            was_running = not state.is_off
            self._stop(instance_id, state, self.settings.stop_timeout_s)
            before = self._hv.xml(instance_id, inactive=True)
            try:
                if capacity > overlay.capacity_bytes:
                    self._hv.resize_volume(overlay.name, capacity)
                self._hv.define(domain.resized(before, vcpus, memory_mb))
                if was_running:
                    self._hv.start(instance_id)
            except ComputeError:
                self._hv.define(before)
                state_now = self._hv.state(instance_id)
                if was_running and (state_now is None or state_now.is_off):
                    self._hv.start(instance_id)
                raise
            log.info("instance_resized", instance=instance_id, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb)
            return PowerState.of(self._hv.state(instance_id))

    def make_image(self, instance_id: str, image_id: str, url: str) -> Sent:
        """Flatten the stopped instance's root disk into a self-contained qcow2 and send it to ``url``,
        a signed upload link to the file of ``image_id``.

        The instance stays locked throughout, so nothing starts it while its disk is read.  The
        flattened copy is in the instance's directory (its delete would take it along) and is
        removed whether or not it was sent.
        """
        with self._instance_locks.hold(instance_id):
            state = self._state_of_ours(instance_id)
            if not state.is_off:
                raise Conflict(f"instance {instance_id} is {state.value}; stop it first: an image is made only of a "
                               "stopped instance's disk")
            overlay = self._hv.volume(overlay_name(instance_id))
            if overlay is None:
                raise NotFound(f"instance {instance_id} has no root disk on this host")
            copy = self.instance_dir(instance_id) / f"image-{image_id}.qcow2"
            started = time.monotonic()
            try:
                copy.parent.mkdir(parents=True, exist_ok=True)
                qemuimg.flatten(overlay.path, copy, self.settings.flatten_timeout_s)
                sent = self._images.upload(image_id, copy, url)
            except OSError as exc:
                raise HypervisorError(f"make room for the image in {copy.parent}: {exc}") from exc
            finally:
                copy.unlink(missing_ok=True)
            log.info("instance_image_made", instance=instance_id, image=image_id, bytes=sent.size_bytes,
                     seconds=round(time.monotonic() - started, 3))
            return sent

    def inventory(self) -> dict[str, PowerState]:
        """Every instance on this host (our domains only), running or not."""
        return {name: PowerState.of(state) for name, state in sorted(self._hv.domains().items())}

    def console(self, instance_id: str, max_bytes: int) -> Console:
        self._state_of_ours(instance_id)
        info = domain.parse(self._hv.xml(instance_id))
        path = info.console_log or self.instance_dir(instance_id) / CONSOLE_FILE
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - max_bytes))
                tail = f.read(max_bytes)
        except FileNotFoundError:  # never started: nothing logged yet
            tail = b""
        except OSError as exc:
            raise HypervisorError(f"read the console log {path}: {exc}") from exc
        return Console(tail.decode("utf-8", errors="replace"), info.vnc_port)

    def open_console(self, instance_id: str, on_output: Callable[[bytes], None],
                     on_end: Callable[[str], None]) -> ConsoleStream:
        """The instance's serial console, live; its guest must be running."""
        state = self._state_of_ours(instance_id)
        if state.is_off:
            raise Conflict(f"instance {instance_id} is {PowerState.of(state).value}: a live console needs it running")
        return self._hv.open_console(instance_id, on_output, on_end)

    def _state_of_ours(self, instance_id: str) -> DomainState:
        state = self._hv.state(instance_id)
        if state is None:
            raise NotFound(f"instance {instance_id} is not on this host")
        self._require_ours(instance_id)
        return state

    def _require_ours(self, instance_id: str) -> None:
        if not self._hv.is_ours(instance_id):
            raise Conflict(f"domain {instance_id} on this host was not made by cloudland; it is left alone")

    # --- volumes -------------------------------------------------------------------------

    def create_volume(self, volume_id: str, size_gb: int, snapshot_id: str | None = None) -> None:
        """An empty volume, or (``snapshot_id``) a copy of a snapshot on this host, grown to ``size_gb``."""
        with self._volume_locks.hold(volume_id):
            if self._hv.volume(volume_name(volume_id)) is not None:
                log.info("volume_exists", volume=volume_id)
                return
            if snapshot_id is None:
                self._hv.create_volume(volume_name(volume_id), size_gb * GIB, "qcow2")
            else:
                self._copy_snapshot(volume_id, size_gb, snapshot_id)
            log.info("volume_created", volume=volume_id, size_gb=size_gb, snapshot=snapshot_id)

    def _copy_snapshot(self, volume_id: str, size_gb: int, snapshot_id: str) -> None:
        with self._snapshot_locks.hold(snapshot_id):
            snapshot = self._hv.volume(snapshot_name(snapshot_id))
            if snapshot is None:
                raise NotFound(f"snapshot {snapshot_id} is not on this host")
            if size_gb * GIB < snapshot.capacity_bytes:  # refused before anything is made
                raise BadRequest(f"volume {volume_id}: {size_gb} GB is smaller than snapshot {snapshot_id} "
                                 f"({snapshot.capacity_bytes / GIB:g} GB)")
            self._hv.clone_volume(volume_name(volume_id), snapshot.name)
        if size_gb * GIB > snapshot.capacity_bytes:
            try:
                self._hv.resize_volume(volume_name(volume_id), size_gb * GIB)
            except ComputeError:
                self._hv.delete_volume(volume_name(volume_id))
                raise

    def snapshot_volume(self, volume_id: str, snapshot_id: str) -> Consistency:
        """Copy the volume as it is now to ``snap-<id>``; a volume a running guest uses is copied live.

        Live: a disk-only snapshot (the guest's file systems frozen by its agent if one answers)
        sends the guest's writes to an overlay while the volume's file, still, is copied; then
        the overlay is merged back and dropped.  If anything fails, the copy is removed and the
        guest is back on its volume alone before the error is raised.
        """
        volume = self._hv.volume(volume_name(volume_id))
        if volume is None:
            raise NotFound(f"volume {volume_id} is not on this host")
        users = self._hv.disk_users(volume.path)
        if len(users) > 1:
            raise Conflict(f"volume {volume_id} is attached to {', '.join(users)}")
        with contextlib.ExitStack() as held:
            # instance before volume, as attach and detach take them: no op waits on another in turn
            if users:
                held.enter_context(self._instance_locks.hold(users[0]))
            held.enter_context(self._volume_locks.hold(volume_id))
            held.enter_context(self._snapshot_locks.hold(snapshot_id))
            if self._hv.disk_users(volume.path) != users:
                raise Conflict(f"volume {volume_id} was attached or detached meanwhile; ask again")
            # A copy of this id is what a backend killed mid-snapshot left: start afresh.
            self._hv.delete_volume(snapshot_name(snapshot_id))
            consistency = Consistency.OFFLINE
            state = self._state_of_ours(users[0]) if users else None
            live = None if state is None or state.is_off else self._live_disk(users[0], volume_id, volume)
            if live is None:
                self._hv.clone_volume(snapshot_name(snapshot_id), volume.name)
            else:
                consistency = self._snapshot_live(users[0], volume_id, live, volume, snapshot_id)
            log.info("volume_snapshot_taken", volume=volume_id, snapshot=snapshot_id, consistency=consistency.value)
            return consistency

    def _work_overlay(self, instance_id: str, volume_id: str) -> Path:
        """Where a running guest's writes to a volume go while the volume is copied: the instance's
        own directory, so the instance's delete takes it along."""
        return self.instance_dir(instance_id) / f"snapshot-{volume_id}.qcow2"

    def _live_disk(self, instance_id: str, volume_id: str, volume: Volume) -> Disk | None:
        """The running guest's disk of the volume; a merge left unfinished (a backend killed in a
        live snapshot) is finished first."""
        work = self._work_overlay(instance_id, volume_id)
        for disk in domain.parse(self._hv.xml(instance_id)).disks:
            if disk.path == work:
                self._merge_back(instance_id, disk.target, volume.path, work)
                return Disk(volume.path, "qcow2", disk.target, serial=disk.serial)
            if disk.path == volume.path:
                return disk
        return None

    def _snapshot_live(self, instance_id: str, volume_id: str, disk: Disk, volume: Volume,
                       snapshot_id: str) -> Consistency:
        work = self._work_overlay(instance_id, volume_id)
        info = domain.parse(self._hv.xml(instance_id))
        others = tuple(d.target for d in info.disks if d.target != disk.target)
        _remove_file(work)  # an overlay no disk uses: left by a snapshot that failed half-way
        consistency = Consistency.CRASH_CONSISTENT
        try:
            if info.has_agent:
                try:
                    self._hv.snapshot_disk(instance_id, disk.target, work, others, quiesce=True)
                    consistency = Consistency.FROZEN
                except NoGuestAgent as exc:
                    log.info("volume_snapshot_unfrozen", instance=instance_id, reason=str(exc))
            if consistency is not Consistency.FROZEN:
                self._hv.snapshot_disk(instance_id, disk.target, work, others, quiesce=False)
        except ComputeError:
            _remove_file(work)
            raise
        try:
            self._hv.clone_volume(snapshot_name(snapshot_id), volume.name)
        except ComputeError as exc:
            self._merge_after_failure(instance_id, disk.target, volume.path, work, exc)
            raise
        try:
            self._merge_back(instance_id, disk.target, volume.path, work)
        except ComputeError:
            self._hv.delete_volume(snapshot_name(snapshot_id))
            raise
        return consistency

    def _merge_after_failure(self, instance_id: str, target: str, base: Path, work: Path,
                             cause: ComputeError) -> None:
        try:
            self._merge_back(instance_id, target, base, work)
        except ComputeError as exc:
            raise HypervisorError(f"{cause} (and merging the guest's writes back failed: {exc}; the next "
                                  f"snapshot of the volume finishes it)", cause.exit_status) from exc

    def _merge_back(self, instance_id: str, target: str, base: Path, work: Path) -> None:
        """Merge the overlay ``work`` under ``target`` back into ``base``, switch the guest to ``base``
        and remove ``work``."""
        self._hv.commit_active(instance_id, target)
        if not self._poll(lambda: self._hv.pivot(instance_id, target), self.settings.merge_timeout_s):
            self._hv.abort_block_job(instance_id, target)
            raise HypervisorError(f"merging the writes of instance {instance_id} to {target} back into {base} "
                                  f"took over {self.settings.merge_timeout_s:g} s; they stay in {work}")
        # libvirt pointed the definition at the overlay too; a pivot may not point it back
        inactive = self._hv.xml(instance_id, inactive=True)
        if any(d.path == work for d in domain.parse(inactive).disks):
            self._hv.define(domain.moved_disk(inactive, work, base))
        _remove_file(work)

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self._snapshot_locks.hold(snapshot_id):
            if self._hv.delete_volume(snapshot_name(snapshot_id)):
                log.info("snapshot_deleted", snapshot=snapshot_id)

    def delete_volume(self, volume_id: str) -> None:
        with self._volume_locks.hold(volume_id):
            volume = self._hv.volume(volume_name(volume_id))
            if volume is None:
                return
            users = self._hv.disk_users(volume.path)
            if users:
                raise Conflict(f"volume {volume_id} is attached to {', '.join(users)}; detach it first")
            self._hv.delete_volume(volume.name)
            log.info("volume_deleted", volume=volume_id)

    def attach_volume(self, volume_id: str, instance_id: str) -> str:
        """Attach (live if the instance runs); the device name asked for, which the guest may not use."""
        with self._instance_locks.hold(instance_id), self._volume_locks.hold(volume_id):
            state = self._state_of_ours(instance_id)
            volume = self._hv.volume(volume_name(volume_id))
            if volume is None:
                raise NotFound(f"volume {volume_id} is not on this host")
            users = self._hv.disk_users(volume.path)
            if instance_id in users:  # a replay: answer as the first time
                attached = (self._find_disk(instance_id, volume.path, inactive=False)
                            or self._find_disk(instance_id, volume.path, inactive=True))
                if attached is not None:
                    return attached.target
            if users:
                raise Conflict(f"volume {volume_id} is attached to {', '.join(users)}")
            target = self._free_target(instance_id)
            self._hv.attach_disk(instance_id, Disk(volume.path, "qcow2", target, serial=volume_id),
                                 live=not state.is_off)
            log.info("volume_attached", volume=volume_id, instance=instance_id, device=target)
            return target

    def _free_target(self, instance_id: str) -> str:
        used = {disk.target for inactive in (False, True)
                for disk in domain.parse(self._hv.xml(instance_id, inactive=inactive)).disks}
        for target in _VOLUME_TARGETS:
            if target not in used:
                return target
        raise Conflict(f"instance {instance_id} has no free disk slot ({_VOLUME_TARGETS[0]} to "
                       f"{_VOLUME_TARGETS[-1]} are taken)")

    def detach_volume(self, volume_id: str, instance_id: str) -> None:
        """Detach; done if it was not attached.  A live detach waits for the guest to let go."""
        with self._instance_locks.hold(instance_id), self._volume_locks.hold(volume_id):
            state = self._hv.state(instance_id)
            volume = self._hv.volume(volume_name(volume_id))
            if state is None or volume is None:
                return
            self._require_ours(instance_id)
            live = None if state.is_off else self._find_disk(instance_id, volume.path, inactive=False)
            config = self._find_disk(instance_id, volume.path, inactive=True)
            disk = live or config
            if disk is None:
                return
            self._hv.detach_disk(instance_id, disk, live=live is not None, config=config is not None)
            if live is not None and not self._wait_released(instance_id, volume.path):
                raise HypervisorError(f"instance {instance_id} has not released volume {volume_id} "
                                      f"({disk.target}) after {self.settings.detach_timeout_s:g} s; it is gone "
                                      f"from the definition and goes from the guest when it lets go or stops")
            log.info("volume_detached", volume=volume_id, instance=instance_id, device=disk.target)

    def _find_disk(self, instance_id: str, path: Path, inactive: bool) -> Disk | None:
        disks = domain.parse(self._hv.xml(instance_id, inactive=inactive)).disks
        return next((disk for disk in disks if disk.path == path), None)

    def _wait_released(self, instance_id: str, path: Path) -> bool:
        """Whether the running guest let go of ``path`` in time (QEMU removes a disk once the guest agrees)."""
        return self._poll(lambda: self._find_disk(instance_id, path, inactive=False) is None,
                          self.settings.detach_timeout_s)


def _remove_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise HypervisorError(f"remove {path}: {exc}") from exc
