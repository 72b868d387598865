"""The only module that calls libvirt (``domainevents`` listens to it).

``Hypervisor`` holds one connection (reopened when it stops answering) and offers typed calls
on domains and on the ``cloudland`` directory storage pool.  It validates nothing: its callers
pass checked arguments.  Every libvirt error leaves here as a ``ComputeError`` through
``exceptions.from_libvirt``, the one mapping of libvirt's codes.

Domains are named by the caller (instance ids); a domain is *ours* when it carries the
metadata element of ``domain.METADATA_NS``, and only ours are listed, so unrelated domains on
the host are never reported.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import libvirt
import structlog

from .domain import (METADATA_NS, Disk, DiskFormat, boot_files, disk_snapshot_xml, disk_xml, files_used, metadata_host,
                     parse)
from .exceptions import HypervisorError, NotFound, from_libvirt
from .storagexml import pool_path, pool_xml, volume_xml

__all__ = ["ConsoleStream", "DomainState", "Hypervisor", "Volume", "ensure_event_loop", "pool_name"]

log = structlog.get_logger("backend.compute")

def pool_name(host: str) -> str:
    """One pool per backend: backends that share a libvirtd (a local cluster) must not share a pool."""
    return f"cloudland-{host}"


class DomainState(enum.Enum):
    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    #: an ACPI shutdown is in progress
    SHUTDOWN = "shutdown"
    SHUTOFF = "shutoff"
    #: the guest crashed: off (libvirt's default on_crash destroys it), or kept as it was
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"

    @property
    def is_off(self) -> bool:
        """No QEMU process: the domain exists only as its definition."""
        return self in (DomainState.SHUTOFF, DomainState.CRASHED)


_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PMSUSPENDED,
}


#: libvirt's own brief pauses, inside an operation that resumes (or ends) the guest: not news
_PASSING_PAUSES = frozenset({
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP, libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN, libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT,
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_SAVE, libvirt.VIR_DOMAIN_PAUSED_DUMP,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY})


def state_of(state: int, reason: int) -> DomainState:
    """The state libvirt gives as (state, reason), as a user means it: a guest destroyed by its
    crash is crashed, not merely off; one that QEMU holds for a moment while it starts (or is
    snapshotted) is running, not paused."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
        return DomainState.CRASHED
    if state == libvirt.VIR_DOMAIN_PAUSED and reason in _PASSING_PAUSES:
        return DomainState.RUNNING
    return _STATES.get(state, DomainState.NOSTATE)


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    path: Path
    capacity_bytes: int


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise from_libvirt(exc.get_error_code() or 0, exc.get_error_message() or str(exc), what) from exc


def _quiet(_ctx: object, _error: object) -> None:
    """libvirt's default handler prints every failed call on stderr, even those we expect and handle."""


_loop_lock = threading.Lock()
_loop_started = False


def ensure_event_loop() -> None:
    """libvirt's event loop, on a thread of its own, once per process.

    Events and stream callbacks reach only connections opened after it is registered.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-event-loop", daemon=True).start()
        _loop_started = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


#: how much a console stream reads at once
_CONSOLE_READ = 16 << 10
#: how long a console write waits for the guest's serial port to take its bytes
_CONSOLE_SEND_TIMEOUT_S = 5.0
_STREAM_EVENTS = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP


class ConsoleStream:
    """A running guest's serial console, live: what the guest writes goes to ``on_output`` and
    its end to ``on_end`` (both on libvirt's event thread: they must not block); ``send`` types.

    On a connection of its own, so that closing it never disturbs the ops' connection.
    """

    def __init__(self, conn: Any, stream: Any, on_output: Callable[[bytes], None],
                 on_end: Callable[[str], None]) -> None:
        self._conn = conn
        self._stream = stream
        self._on_output = on_output
        self._on_end = on_end
        self._lock = threading.Lock()
        self._closed = False

    def send(self, data: bytes) -> None:
        deadline = time.monotonic() + _CONSOLE_SEND_TIMEOUT_S
        while data:
            with self._lock:
                if self._closed:
                    raise HypervisorError("the console is closed")
                with _mapped("write to the console"):
                    sent = self._stream.send(data)
            if sent == -2:  # the pty is full: the guest reads its serial port slower than we type
                if time.monotonic() > deadline:
                    raise HypervisorError("write to the console: the guest takes no input")
                time.sleep(0.01)
                continue
            data = data[sent:]

    def close(self) -> None:
        """Let the console go (idempotent); ``on_end`` is not called."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(libvirt.libvirtError):
                self._stream.eventRemoveCallback()
            with contextlib.suppress(libvirt.libvirtError):
                self._stream.abort()
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()

    def _ready(self, stream: Any, events: int, _opaque: Any) -> None:
        ended = None
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            ended = self._read(stream)
        if ended is None and events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            ended = "the guest's serial port closed"
        if ended is None:
            return
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventRemoveCallback()
        # Closed elsewhere: freeing a stream or its connection inside its own callback is not safe.
        threading.Thread(target=self.close, name="console-close", daemon=True).start()
        self._on_end(ended)

    def _read(self, stream: Any) -> str | None:
        """Hand on what is there; why the console ended, if it did."""
        while True:
            try:
                data = stream.recv(_CONSOLE_READ)
            except libvirt.libvirtError as exc:
                return f"the console failed: {exc.get_error_message()}"
            if data == -2:  # nothing more for now
                return None
            if not data:
                return "the guest's serial port closed"
            self._on_output(bytes(data))


class Hypervisor:
    def __init__(self, uri: str, pool_dir: Path, host: str) -> None:
        self.uri = uri
        self.pool_dir = pool_dir
        #: the backend's node id: the domains it owns carry it in their metadata
        self.host = host
        self.pool_name = pool_name(host)
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool_checked = False
        libvirt.registerErrorHandler(_quiet, None)

    def close(self) -> None:
        with self._conn_lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def _connection(self) -> Any:
        with self._conn_lock:
            if self._conn is not None:
                # isAlive() only notices a dead libvirtd after a failed call; one cheap round trip
                # notices it before, so the op at hand runs on a fresh connection instead of failing.
                try:
                    self._conn.getLibVersion()
                    return self._conn
                except libvirt.libvirtError:
                    log.warning("libvirt_reconnecting", uri=self.uri)
                    with contextlib.suppress(libvirt.libvirtError):
                        self._conn.close()
                    self._conn = None
            with _mapped(f"connect to libvirt at {self.uri}"):
                self._conn = libvirt.open(self.uri)
            return self._conn

    # --- domains -------------------------------------------------------------------------

    def _domain(self, name: str) -> Any:
        with _mapped(f"find domain {name}"):
            return self._connection().lookupByName(name)

    def define(self, xml: str) -> None:
        """Define (or redefine: same name and UUID) a persistent domain."""
        with _mapped("define the domain"):
            self._connection().defineXML(xml)

    def start(self, name: str) -> None:
        with _mapped(f"start domain {name}"):
            self._domain(name).create()

    def resume(self, name: str) -> None:
        with _mapped(f"resume domain {name}"):
            self._domain(name).resume()

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off; returns at once, the guest may take its time or ignore it.

        The driver's default method: ACPI for QEMU domains without a guest agent (ours have none).
        Not the explicit ACPI flag, which other drivers (test:///) refuse.
        """
        with _mapped(f"shut down domain {name}"):
            self._domain(name).shutdown()

    def destroy(self, name: str) -> None:
        """Power off at once."""
        with _mapped(f"power off domain {name}"):
            self._domain(name).destroy()

    def undefine(self, name: str) -> None:
        """Remove the definition, with its managed-save image, snapshot metadata and UEFI variables."""
        domain = self._domain(name)
        with _mapped(f"undefine domain {name}"):
            flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            # Only asked for when there are some: drivers without UEFI (test:///) refuse the flag.
            if parse(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).has_nvram:
                flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            domain.undefineFlags(flags)

    def state(self, name: str) -> DomainState | None:
        """The domain's state; None if there is no such domain."""
        try:
            domain = self._domain(name)
        except NotFound:
            return None
        with _mapped(f"read the state of domain {name}"):
            return state_of(*domain.state())

    def is_ours(self, name: str) -> bool:
        with _mapped(f"read the metadata of domain {name}"):
            return self.owns(self._domain(name))

    def owns(self, domain: Any) -> bool:
        """Whether ``domain`` (a libvirt domain) is one of this backend's."""
        try:
            element = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return False
            raise
        return metadata_host(str(element)) == self.host

    def domains(self) -> dict[str, DomainState]:
        """Our domains by name, running or not."""
        found: dict[str, DomainState] = {}
        with _mapped("list domains"):
            for domain in self._connection().listAllDomains(0):
                try:
                    if self.owns(domain):
                        found[str(domain.name())] = state_of(*domain.state())
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # undefined while we listed
                        raise
        return found

    def open_console(self, name: str, on_output: Callable[[bytes], None],
                     on_end: Callable[[str], None]) -> ConsoleStream:
        """The running domain's serial console, live (``ConsoleStream``).

        Never forced: a console someone holds on the host (``virsh console``) is refused, not taken.
        """
        ensure_event_loop()
        with _mapped(f"connect to libvirt at {self.uri}"):
            conn = libvirt.open(self.uri)
        try:
            with _mapped(f"open the console of domain {name}"):
                domain = conn.lookupByName(name)
                stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
                domain.openConsole(None, stream, 0)
                console = ConsoleStream(conn, stream, on_output, on_end)
                stream.eventAddCallback(_STREAM_EVENTS, console._ready, None)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            raise
        return console

    def xml(self, name: str, inactive: bool = False) -> str:
        """The domain's XML: as it runs, or (``inactive``) as it will next start."""
        with _mapped(f"read the XML of domain {name}"):
            return str(self._domain(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))

    def disk_users(self, path: Path) -> list[str]:
        """Every domain, ours or not, reading ``path`` (as a disk or under one) now or at its next start."""
        with _mapped("list domains"):
            return [str(domain.name()) for domain, xmls in self._domain_xmls()
                    if any(path in files_used(xml) for xml in xmls)]

    def files_in_use(self) -> set[Path]:
        """Every file a domain, ours or not, reads now or at its next start: its disks (with the chains
        under them where libvirt shows them) and the kernel and initrd it boots."""
        files: set[Path] = set()
        with _mapped("list domains"):
            for _domain, xmls in self._domain_xmls():
                for xml in xmls:
                    files |= files_used(xml) | boot_files(xml)
        return files

    def _domain_xmls(self) -> Iterator[tuple[Any, set[str]]]:
        """Every domain with its XML as it runs and as it will next start (one gone meanwhile is skipped)."""
        for domain in self._connection().listAllDomains(0):
            try:
                xmls = {domain.XMLDesc(0), domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)}
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue
                raise
            yield domain, xmls

    def attach_disk(self, name: str, disk: Disk, live: bool) -> None:
        """Add ``disk`` to the definition and, if ``live``, to the running guest."""
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
        with _mapped(f"attach {disk.path} to domain {name} as {disk.target}"):
            self._domain(name).attachDeviceFlags(disk_xml(disk), flags)

    def detach_disk(self, name: str, disk: Disk, live: bool, config: bool) -> None:
        """Remove ``disk`` from the running guest (``live``; the guest must let go) and/or the definition."""
        flags = ((libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
                 | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0))
        with _mapped(f"detach {disk.target} from domain {name}"):
            self._domain(name).detachDeviceFlags(disk_xml(disk), flags)

    def snapshot_disk(self, name: str, target: str, overlay: Path, others: tuple[str, ...], quiesce: bool) -> None:
        """Freeze ``target``'s file as it is now: the running guest writes to a new qcow2 ``overlay``
        over it from here on.  With ``quiesce`` the guest agent freezes the guest's file systems
        around it (NoGuestAgent when none answers).  No snapshot metadata is kept: the overlay is
        merged back by ``commit_active``."""
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                 | (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE if quiesce else 0))
        domain = self._domain(name)
        with _mapped(f"snapshot disk {target} of domain {name}{' with its file systems frozen' if quiesce else ''}"):
            domain.snapshotCreateXML(disk_snapshot_xml(target, overlay, others), flags)

    def commit_active(self, name: str, target: str) -> None:
        """Start merging ``target``'s active layer into the file under it; ``pivot`` ends it."""
        flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE | libvirt.VIR_DOMAIN_BLOCK_COMMIT_SHALLOW
        domain = self._domain(name)
        with _mapped(f"start merging disk {target} of domain {name} back"):
            domain.blockCommit(target, None, None, 0, flags)

    def pivot(self, name: str, target: str) -> bool:
        """Switch ``target`` to the file its active commit merged into; False while the merge is not done."""
        domain = self._domain(name)
        with _mapped(f"finish merging disk {target} of domain {name}"):
            info = domain.blockJobInfo(target, 0)
            if not info:
                raise HypervisorError(f"disk {target} of domain {name} has no merge under way to finish")
            if info["cur"] != info["end"]:
                return False
            try:
                domain.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
            except libvirt.libvirtError as exc:
                # caught up a moment ago, behind again now (the guest wrote): not ready yet
                if exc.get_error_code() in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_BLOCK_COPY_ACTIVE):
                    return False
                raise
        return True

    def abort_block_job(self, name: str, target: str) -> None:
        """Give up a merge: the guest keeps writing to the active layer."""
        domain = self._domain(name)
        with _mapped(f"abandon merging disk {target} of domain {name}"):
            domain.blockJobAbort(target, 0)

    # --- the storage pool ----------------------------------------------------------------

    def _pool(self) -> Any:
        """The ``cloudland`` pool, defined, built and started on first use."""
        conn = self._connection()
        with self._pool_lock, _mapped(f"set up storage pool {self.pool_name} at {self.pool_dir}"):
            try:
                pool = conn.storagePoolLookupByName(self.pool_name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = conn.storagePoolDefineXML(pool_xml(self.pool_name, self.pool_dir), 0)
                pool.build(0)  # creates the directory
                pool.setAutostart(1)
                log.info("pool_defined", pool=self.pool_name, path=str(self.pool_dir))
            if not self._pool_checked:
                where = pool_path(pool.XMLDesc(0))
                if where != self.pool_dir:
                    raise HypervisorError(f"storage pool {self.pool_name} is at {where}, not at the configured "
                                          f"compute.pool_dir {self.pool_dir}: fix the setting or move the pool")
                self._pool_checked = True
            if not pool.isActive():
                pool.create(0)
            return pool

    def _volume(self, name: str) -> Any:
        pool = self._pool()
        with _mapped(f"find volume {name}"):
            return pool.storageVolLookupByName(name)

    def volume(self, name: str) -> Volume | None:
        try:
            volume = self._volume(name)
        except NotFound:
            return None
        with _mapped(f"read volume {name}"):
            return Volume(name, Path(volume.path()), int(volume.info()[1]))

    def create_overlay(self, name: str, backing: Path, backing_format: DiskFormat, capacity_bytes: int) -> Path:
        """A qcow2 volume reading through to ``backing`` until written."""
        pool = self._pool()
        with _mapped(f"create volume {name} over {backing}"):
            return Path(pool.createXML(volume_xml(name, capacity_bytes, "qcow2", (backing, backing_format)), 0).path())

    def create_volume(self, name: str, capacity_bytes: int, fmt: DiskFormat) -> Path:
        pool = self._pool()
        with _mapped(f"create volume {name}"):
            return Path(pool.createXML(volume_xml(name, capacity_bytes, fmt), 0).path())

    def clone_volume(self, name: str, source: str) -> Path:
        """A new qcow2 volume holding a copy of ``source``'s data, with no backing file (libvirt runs
        ``qemu-img convert``, and removes what it made if that fails)."""
        pool = self._pool()
        origin = self._volume(source)
        with _mapped(f"copy volume {source} to {name}"):
            capacity = int(origin.info()[1])
            return Path(pool.createXMLFrom(volume_xml(name, capacity, "qcow2"), origin, 0).path())

    def resize_volume(self, name: str, capacity_bytes: int) -> None:
        """Grow the volume to ``capacity_bytes`` (libvirt refuses to shrink without a flag we never pass)."""
        volume = self._volume(name)
        with _mapped(f"resize volume {name}"):
            volume.resize(capacity_bytes, 0)

    def delete_volume(self, name: str) -> bool:
        """Delete the volume and its file; False if there was none."""
        try:
            volume = self._volume(name)
        except NotFound:
            return False
        with _mapped(f"delete volume {name}"):
            volume.delete(0)
        return True
