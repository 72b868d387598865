"""Launches per hypervisor per minute on this machine: ``python -m bench.compute``.

One hypervisor is this host.  The backend's ``ComputeDriver`` is driven directly on
``qemu:///system`` (the work a hypervisor does for ``instance.create``, without the tree and
API around it), in three modes, each at several concurrencies (a pool of ``concurrency``
worker threads sharing N launches; each worker launches, tears down, launches again):

- ``guest``: ``driver.create(spec)`` of the tiny guest (``localcluster/guest.py``: qcow2
  root disk, kernel and initrd, all pre-cached in the driver's image cache, so no download
  is timed; a NoCloud seed with an SSH key), then wait for its ``CLOUDLAND-GUEST-READY``
  line, then ``driver.delete(id)``.  Latency: create call start -> READY first in the
  console log (the file ``driver.console`` reads, its tail read as it does, every 0.1 s);
  ``driver.console(id, bytes)`` must then show the line too, and the time it took is
  ``ready_via_driver_p50_s`` (seconds more at concurrency 20: the driver's one libvirt
  connection is shared with the other workers' creates and deletes);
- ``control``: ``driver.create(spec)`` then ``driver.delete(id)`` at once: define and start
  of a guest destroyed immediately.  Latency: the create call;
- ``floor``: the reference, measured in the same run: bare libvirt-python ``createXML`` of a
  minimal transient domain (same memory and vCPUs, the same kernel/initrd direct boot, no
  disks, no console) then ``destroy()``: what libvirt and QEMU alone cost, without the
  driver's overlay, seed ISO, metadata and pool.  Latency: the ``createXML`` call.

Per mode and concurrency: launches, wall seconds (first launch to the end of the last
teardown: each worker's cycle includes its teardown, so this is a sustained rate), launches
per minute (launches / wall * 60), latency p50/p95, and CPU seconds per launch.  Beside them:
``launch_only_per_min``, derived (concurrency * 60 / mean latency: the rate if teardown took
no time), and ``delete_p50_s`` and ``qemu_zombie_p50_s``: a destroy waits until QEMU's pid
is gone, and where init reaps orphans late (this sandbox's pid 1 takes 1-2 s; a real host's
init at once) that wait, not libvirt's or the driver's work, is most of a teardown.
CPU is counted two ways:

- ``cpu_s_per_launch``: user+system time of this process, libvirtd and virtlogd (each with
  its reaped children: libvirtd runs qemu-img for the overlays) over the level, plus the
  whole life of every QEMU process of the level (QEMU daemonizes: it is nobody's child here,
  so ``/proc/<pid>/stat`` is read every 0.1 s, and just before its teardown; up to 0.1 s of
  its end may be missed).  ``teardown_cpu_s_per_launch`` is the part of it spent tearing
  down: this process's thread time in delete/destroy calls, QEMU after the sample taken just
  before, and libvirtd/virtlogd's time in each 0.1 s sample split among the calls then in
  flight (an estimate when calls overlap; close at concurrency 1);
- ``machine_cpu_s_per_launch``: ``psutil.cpu_times()`` (user+nice+system+irq+softirq)
  over the level, every process of the machine.  Larger when others share the machine
  (``other_domains_running`` in the output says whether guests of others ran).

Everything the run makes (domains, its storage pool ``cloudland-bench-compute-<pid>-<hex>``,
files under a temporary directory) is removed at the end, after a failure and after Ctrl-C
or SIGTERM too; what a SIGKILLed run left is removed by the next run.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import itertools
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from xml.sax.saxutils import escape

import click
import psutil

from backend.compute.driver import CONSOLE_FILE, ComputeDriver, DriverSettings
from backend.compute.hypervisor import Hypervisor
from backend.compute.imagecache import ImageCache
from backend.compute.spec import ImageFile, InstanceSpec
from localcluster import guest as tiny
from localcluster import libvirtd
from service.logs import setup_logging

RESULTS_DIR = Path(__file__).parent / "results"
GUEST_CACHE = Path("/var/tmp/cloudland-guest")  # where the tests build the tiny guest too
URI = libvirtd.URI
MODES = ("guest", "control", "floor")
CONCURRENCY = (1, 5, 20)

#: every launch: small, so that twenty TCG guests fit on two cores
VCPUS = 1
MEMORY_MB = 128
DISK_GB = 1

#: Cloudland's claim, for comparison
CLAIM_PER_MIN = 50
CLAIM = "Cloudland claims ~50 VMs per hypervisor per minute"

READY_TIMEOUT_S = 300.0
CONSOLE_WATCH_S = 0.1  # how often the console log is read
CONSOLE_BYTES = 16384
SAMPLE_S = 0.1  # the CPU sampler's period
SETTLE_S = 1.0  # pause between levels
QEMU_PID_DIR = Path("/run/libvirt/qemu")  # <domain name>.pid, written by libvirtd for each QEMU
PREFIX = "cloudland-bench-compute-"  # temporary directories: PREFIX<pid>-<random>
HOST_PREFIX = "bench-compute-"  # the driver's host id, so its pool is cloudland-bench-compute-<pid>-<hex>
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class Interrupted(Exception):
    """The run was told to stop (Ctrl-C, SIGTERM) while a launch waited."""


# CPU accounting -------------------------------------------------------------------------


def _proc_stat(pid: int, children: bool = False) -> tuple[str, float] | None:
    """The state letter of ``pid`` and its user + system seconds (all its threads; with its reaped
    children if asked); None once it is gone.  A zombie still shows what it spent."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return fields[0].decode(), ticks / _CLK_TCK


def _proc_cpu(pid: int, children: bool = False) -> float | None:
    stat = _proc_stat(pid, children)
    return None if stat is None else stat[1]


def _machine_cpu() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def _daemon_pid(name: str) -> int | None:
    """libvirtd's or virtlogd's pid: from its pid file, else by name."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(Path(f"/run/{name}.pid").read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == name:
            return pid
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == name:
            return int(proc.pid)
    return None


@dataclass
class _Qemu:
    last: float = 0.0
    #: its CPU just before its teardown began
    mark: float | None = None
    #: when a sample first found it a zombie (exited, not yet reaped), and found it gone
    zombie_at: float | None = None
    gone_at: float | None = None


class CpuMeter:
    """CPU seconds of what a level's launches involve, sampled from /proc every ``SAMPLE_S``."""

    def __init__(self, daemons: dict[str, int]) -> None:
        self.daemons = daemons  # role -> pid
        self._lock = threading.Lock()
        self._qemu: dict[int, _Qemu] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._daemons_prev = 0.0
        self._teardown_daemons = 0.0
        self._start: dict[str, float] = {}
        #: of the last level's QEMUs: seconds from exit to reaped, as the samples saw them
        self.zombie_waits: list[float] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> CpuMeter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        self._thread.join()

    def _daemons_now(self) -> dict[str, float]:
        return {role: _proc_cpu(pid, children=True) or 0.0 for role, pid in self.daemons.items()}

    def begin(self) -> None:
        with self._lock:
            self._qemu.clear()
            self._teardown_daemons = 0.0
            daemons = self._daemons_now()
            self._daemons_prev = sum(daemons.values())
            self._start = {"bench": _proc_cpu(os.getpid(), children=True) or 0.0, **daemons,
                           "machine": _machine_cpu()}

    def end(self) -> tuple[dict[str, float], float, float]:
        """CPU seconds since ``begin``: by role, the teardown's part, and the machine's."""
        self._sample()
        with self._lock:
            self.zombie_waits = [q.gone_at - q.zombie_at for q in self._qemu.values()
                                 if q.zombie_at is not None and q.gone_at is not None]
            now = {"bench": _proc_cpu(os.getpid(), children=True) or 0.0, **self._daemons_now()}
            spent = {role: max(0.0, now[role] - self._start[role]) for role in now}
            spent["qemu"] = sum(q.last for q in self._qemu.values())  # each started in this level
            teardown = self._teardown_daemons + sum(q.last - q.mark for q in self._qemu.values() if q.mark is not None)
            machine = _machine_cpu() - self._start["machine"]
        return spent, teardown, machine

    @contextlib.contextmanager
    def call(self, kind: str) -> Iterator[None]:
        """A libvirt-bound call in flight (create, delete, console): libvirtd's time is split among them."""
        with self._lock:
            self._in_flight[kind] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[kind] -= 1

    def watch(self, pid: int) -> None:
        with self._lock:
            self._qemu[pid] = _Qemu(_proc_cpu(pid) or 0.0)

    def mark(self, pid: int) -> None:
        """``pid``'s launch is over (READY, or its teardown begins): what it spends from now on is the teardown's."""
        cpu = _proc_cpu(pid)
        with self._lock:
            q = self._qemu.get(pid)
            if q is not None and q.mark is None:
                q.last = max(q.last, cpu or 0.0)
                q.mark = q.last

    def _sample(self) -> None:
        with self._lock:
            now_s = time.monotonic()
            for pid, q in self._qemu.items():
                stat = _proc_stat(pid)
                if stat is None:  # gone: its last sample stands
                    if q.gone_at is None:
                        q.gone_at = now_s
                    continue
                q.last = max(q.last, stat[1])
                if stat[0] == "Z" and q.zombie_at is None:
                    q.zombie_at = now_s
            now = sum(self._daemons_now().values())
            delta, self._daemons_prev = now - self._daemons_prev, now
            calls = sum(self._in_flight.values())
            if calls and delta > 0:
                self._teardown_daemons += delta * self._in_flight["delete"] / calls

    def _run(self) -> None:
        while not self._halt.wait(SAMPLE_S):
            self._sample()


# Launches -------------------------------------------------------------------------------


@dataclass
class Launch:
    latency_s: float | None = None
    create_s: float | None = None
    delete_s: float | None = None
    #: this process's thread CPU in the delete/destroy call
    teardown_thread_cpu_s: float = 0.0
    #: guest: create call start -> driver.console returned the READY line
    ready_via_driver_s: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Config:
    concurrency: tuple[int, ...]
    launches: int | None
    modes: tuple[str, ...]

    def launches_at(self, concurrency: int) -> int:
        return self.launches if self.launches is not None else max(2 * concurrency, 5)


def qemu_pid(name: str) -> int | None:
    """The QEMU process of domain ``name``: libvirtd's pid file, else a search of the process table."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((QEMU_PID_DIR / f"{name}.pid").read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f"guest={name},".encode() in f.read():
                return pid
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if (proc.info["name"] or "").startswith("qemu-system") and f"guest={name}," in cmdline:
            return int(proc.pid)
    return None


def _ssh_key() -> str:
    """An ed25519 public key line (a random point: the guest only hashes it)."""
    blob = b"".join(len(p).to_bytes(4, "big") + p for p in (b"ssh-ed25519", os.urandom(32)))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} bench@cloudland"


def floor_xml(name: str, kernel: Path, initrd: Path, cmdline: str) -> str:
    return (f"<domain type='qemu'><name>{escape(name)}</name>"
            f"<memory unit='MiB'>{MEMORY_MB}</memory><vcpu>{VCPUS}</vcpu>"
            f"<os><type arch='x86_64'>hvm</type><kernel>{escape(str(kernel))}</kernel>"
            f"<initrd>{escape(str(initrd))}</initrd><cmdline>{escape(cmdline)}</cmdline></os>"
            f"<features><acpi/></features><devices/></domain>")


class ComputeBench:
    def __init__(self, cfg: Config, guest: tiny.Guest) -> None:
        import libvirt

        self.cfg = cfg
        self.guest = guest
        self.stop = threading.Event()
        self.run_id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.host = HOST_PREFIX + self.run_id
        self.floor_prefix = f"clbench-{self.run_id}-floor-"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        try:
            self.hv = Hypervisor(URI, self.tmp / "pool", self.host)
            self.images = ImageCache(self.tmp / "images")
            self.driver = ComputeDriver(self.hv, self.images, DriverSettings(
                instances_dir=self.tmp / "instances", domain_type="qemu", cmdline=guest.cmdline))
            self.conn: Any = libvirt.open(URI)  # the floor's own connection (the driver holds one too)
            self.image, self.kernel, self.initrd = (self._cache(guest.disk, "qcow2"),
                                                    self._cache(guest.kernel, "raw"), self._cache(guest.initrd, "raw"))
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)  # nothing else exists yet: the pool comes with the first op
            raise
        self.ssh_key = _ssh_key()
        daemons = {name: pid for name in ("libvirtd", "virtlogd") if (pid := _daemon_pid(name)) is not None}
        self.meter = CpuMeter(daemons)
        self._next = 0
        self._next_lock = threading.Lock()
        self.out: dict[str, Any] = {
            "modes": list(cfg.modes), "concurrency": list(cfg.concurrency),
            "vcpus": VCPUS, "memory_mb": MEMORY_MB, "disk_gb": DISK_GB, "domain_type": "qemu (TCG)",
            "claim_per_min": CLAIM_PER_MIN, "claim": CLAIM,
            "image_source": "pre-cached: the tiny guest's files copied into the driver's image cache before "
                            "timing (no download is timed)",
            "cpu_accounting": "cpu_s_per_launch: user+sys of this process, libvirtd and virtlogd (with their reaped "
                              "children) over the level plus every QEMU process of the level (from /proc, sampled "
                              f"every {SAMPLE_S:g} s and before teardown: up to {SAMPLE_S:g} s of its end may be "
                              "missed); "
                              "machine_cpu_s_per_launch: psutil.cpu_times() of the whole machine over the level",
            "wall": "first launch to the end of the last teardown; a worker's cycle is launch + teardown",
            "launch_only": "derived, min(concurrency, launches) * 60 / mean latency: the rate if teardown took no time",
            "ready_detection": f"READY first in the console log file (its last {CONSOLE_BYTES} bytes, read every "
                               f"{CONSOLE_WATCH_S:g} s, as driver.console reads them), then confirmed by "
                               "driver.console(id, bytes): ready_via_driver_p50_s",
            "host": self.host, "pool": self.hv.pool_name, "run_dir": str(self.tmp), "floor_prefix": self.floor_prefix,
            "daemon_pids": daemons, "cpu_count": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "guest_kernel": guest.kernel_version,
            "libvirt": _version(self.conn.getLibVersion()), "qemu": _version(self.conn.getVersion()),
            "commit": _commit(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "other_domains_running_at_start": self._others_running(),
            "levels": [],
        }

    def _cache(self, source: Path, fmt: str) -> ImageFile:
        image_id = str(uuid.uuid4())
        shutil.copyfile(source, self.images.path(image_id))
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        return ImageFile(image_id, "qcow2" if fmt == "qcow2" else "raw", digest, "http://127.0.0.1:9/pre-cached")

    def _others_running(self) -> int:
        """Active domains on this libvirtd that are not this run's: others share the machine."""
        return sum(1 for d in self.conn.listAllDomains(1) if not self._is_mine(d))

    def _is_mine(self, dom: Any) -> bool:
        try:
            return bool(dom.name().startswith(self.floor_prefix) or str(self.tmp) in dom.XMLDesc(0))
        except Exception:  # noqa: BLE001 - gone meanwhile
            return False

    # The run --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.meter.start()
        try:
            self._warm_up()
            for i, (concurrency, mode) in enumerate(itertools.product(self.cfg.concurrency, self.cfg.modes)):
                if i:
                    self._sleep(SETTLE_S)  # the previous level's QEMUs are gone; libvirtd settles
                self._level(mode, concurrency, self.cfg.launches_at(concurrency))
        finally:
            self.meter.stop()
        self.out["other_domains_running_at_end"] = self._others_running()
        self.out["wall_s"] = round(time.monotonic() - started, 1)
        return self.out

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Interrupted()

    def _warm_up(self) -> None:
        """One untimed control and floor cycle: the pool is defined, the connections opened, files cached."""
        for cycle in (self._control, self._floor):
            launch = cycle(-1)
            if launch.error:
                raise RuntimeError(f"warm-up {cycle.__name__.strip('_')}: {launch.error}")

    def _level(self, mode: str, concurrency: int, launches: int) -> None:
        cycle: Callable[[int], Launch] = {"guest": self._guest, "control": self._control, "floor": self._floor}[mode]
        results: list[Launch] = []
        self._next = 0

        def worker() -> None:
            while not self.stop.is_set():
                with self._next_lock:
                    k = self._next
                    if k >= launches:
                        return
                    self._next += 1
                results.append(cycle(k))

        click.echo(f"{mode:<8} concurrency {concurrency:>2}: {launches} launches ...", err=True)
        self.meter.begin()
        started = time.monotonic()
        with ThreadPoolExecutor(concurrency, thread_name_prefix=f"{mode}-{concurrency}") as pool:
            futures: list[Future[None]] = [pool.submit(worker) for _ in range(concurrency)]
            try:
                while wait_futures(futures, timeout=0.2).not_done:
                    pass
            except BaseException:
                self.stop.set()  # the workers end their launch, tear it down and return
                for sig in (signal.SIGINT, signal.SIGTERM):  # while they do, no second interrupt cuts in
                    signal.signal(sig, _announce_cleanup)
                raise
        wall = time.monotonic() - started
        spent, teardown, machine = self.meter.end()
        for future in futures:
            future.result()
        self.out["levels"].append(self._summary(mode, concurrency, launches, results, wall, spent, teardown, machine))
        if self.stop.is_set():
            raise Interrupted()

    def _summary(self, mode: str, concurrency: int, launches: int, results: list[Launch], wall: float,
                 spent: dict[str, float], teardown: float, machine: float) -> dict[str, Any]:
        ok = [r for r in results if r.error is None]
        done = len(ok)
        per = 1 / done if done else math.nan
        latencies = [r.latency_s for r in ok if r.latency_s is not None]
        teardown += sum(r.teardown_thread_cpu_s for r in results)
        level: dict[str, Any] = {
            "mode": mode, "concurrency": concurrency, "planned": launches, "launches": done,
            "failed": len(results) - done, "wall_s": round(wall, 3),
            "per_min": round(done / wall * 60, 2) if wall > 0 else None,
            "launch_only_per_min": (round(min(concurrency, launches) * 60 / statistics.fmean(latencies), 2)
                                    if latencies and min(latencies) > 0 else None),
            "latency_p50_s": _pct(latencies, 50), "latency_p95_s": _pct(latencies, 95),
            "latency_max_s": round(max(latencies), 3) if latencies else None,
            "create_p50_s": _pct([r.create_s for r in ok if r.create_s is not None], 50),
            "delete_p50_s": _pct([r.delete_s for r in results if r.delete_s is not None], 50),
            "qemu_zombie_p50_s": _pct(self.meter.zombie_waits, 50),
            "cpu_s_per_launch": _round(sum(spent.values()) * per),
            "cpu_s_per_launch_by_role": {k: _round(v * per) for k, v in sorted(spent.items())},
            "teardown_cpu_s_per_launch": _round(teardown * per),
            "machine_cpu_s_per_launch": _round(machine * per),
            "cpu_cores_busy": _round(sum(spent.values()) / wall) if wall > 0 else None,
            "machine_cores_busy": _round(machine / wall) if wall > 0 else None,
        }
        if mode == "guest":
            level["ready_via_driver_p50_s"] = _pct([r.ready_via_driver_s for r in ok
                                                    if r.ready_via_driver_s is not None], 50)
        errors = [r.error for r in results if r.error is not None]
        if errors:
            level["errors"] = sorted(set(errors))[:10]
        return level

    # One launch each ------------------------------------------------------------------------

    def _spec(self, k: int) -> InstanceSpec:
        return InstanceSpec(
            instance_id=str(uuid.uuid4()), name=f"bench-{k}", vcpus=VCPUS, memory_mb=MEMORY_MB, disk_gb=DISK_GB,
            image=self.image, kernel=self.kernel, initrd=self.initrd, ssh_keys=(self.ssh_key,), user_data="",
            ports=(), volume_ids=())

    def _guest(self, k: int) -> Launch:
        return self._driver_cycle(k, wait_ready=True)

    def _control(self, k: int) -> Launch:
        return self._driver_cycle(k, wait_ready=False)

    def _driver_cycle(self, k: int, wait_ready: bool) -> Launch:
        spec = self._spec(k)
        instance_id = spec.instance_id
        launch = Launch()
        pid = None
        started = time.monotonic()
        try:
            with self.meter.call("create"):
                self.driver.create(spec)
            launch.create_s = time.monotonic() - started
            pid = qemu_pid(instance_id)
            if pid is not None:
                self.meter.watch(pid)
            if wait_ready:
                launch.latency_s = self._wait_ready(instance_id, pid, started, launch) - started
            else:
                launch.latency_s = launch.create_s
        except Exception as exc:  # noqa: BLE001 - counted as a failed launch, the level goes on
            launch.error = _error(exc)
        finally:
            self._teardown(launch, pid, lambda: self.driver.delete(instance_id))
        return launch

    def _wait_ready(self, instance_id: str, pid: int | None, started: float, launch: Launch) -> float:
        """When the READY line was first in the console log; ``driver.console`` must then show it too.

        The log is the file ``driver.console`` reads, its tail read the same way, every 0.1 s.  The
        driver's one libvirt connection is shared with the other workers' creates and deletes, and
        a console read can wait seconds behind them: how long is ``ready_via_driver_p50_s``.
        """
        path = self.driver.instance_dir(instance_id) / CONSOLE_FILE
        while True:
            log = _tail(path, CONSOLE_BYTES)
            now = time.monotonic()
            if tiny.READY in log:
                if pid is not None:
                    self.meter.mark(pid)  # from here on the guest only waits for its teardown
                with self.meter.call("console"):
                    shown = self.driver.console(instance_id, CONSOLE_BYTES).log
                launch.ready_via_driver_s = time.monotonic() - started
                if tiny.READY not in shown:
                    raise RuntimeError(f"READY is in {path} but not in what driver.console returned: {shown[-200:]!r}")
                return now
            if tiny.NOSEED in log:
                raise RuntimeError("the guest found no NoCloud seed")
            if pid is not None and not os.path.exists(f"/proc/{pid}"):
                raise RuntimeError(f"QEMU ended before READY; console ends {log[-200:]!r}")
            if now - started > READY_TIMEOUT_S:
                raise TimeoutError(f"no READY after {READY_TIMEOUT_S:g} s; console ends {log[-200:]!r}")
            if self.stop.wait(CONSOLE_WATCH_S):
                raise Interrupted("interrupted")

    def _floor(self, k: int) -> Launch:
        name = f"{self.floor_prefix}{k}-{secrets.token_hex(3)}"
        xml = floor_xml(name, self.images.path(self.kernel.id), self.images.path(self.initrd.id), self.guest.cmdline)
        launch = Launch()
        dom: Any = None
        pid = None
        started = time.monotonic()
        try:
            with self.meter.call("create"):
                dom = self.conn.createXML(xml, 0)
            launch.latency_s = launch.create_s = time.monotonic() - started
            pid = qemu_pid(name)
            if pid is not None:
                self.meter.watch(pid)
        except Exception as exc:  # noqa: BLE001
            launch.error = _error(exc)
        finally:
            if dom is not None:
                self._teardown(launch, pid, dom.destroy)
        return launch

    def _teardown(self, launch: Launch, pid: int | None, teardown: Callable[[], object]) -> None:
        if pid is not None:
            self.meter.mark(pid)
        thread_cpu = time.thread_time()
        started = time.monotonic()
        try:
            with self.meter.call("delete"):
                teardown()
        except Exception as exc:  # noqa: BLE001 - the final clean-up gets it
            launch.error = launch.error or f"teardown: {_error(exc)}"
        launch.delete_s = time.monotonic() - started
        launch.teardown_thread_cpu_s = time.thread_time() - thread_cpu

    # Clean-up -------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove every domain, the pool and the files of this run; what could not be removed, in words."""
        problems = _remove_run(self.conn, lambda dom: self._is_mine(dom), self.hv.pool_name)
        self.hv.close()
        self.images.close()
        left = [str(d.name()) for d in self.conn.listAllDomains(0) if self._is_mine(d)]
        if left:
            problems.append(f"domains left: {left}")
        with contextlib.suppress(Exception):
            self.conn.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.tmp.exists():
            problems.append(f"{self.tmp} is left")
        return problems


def _remove_run(conn: Any, mine: Callable[[Any], bool], pool_name: str | None) -> list[str]:
    import libvirt

    problems = []
    for dom in conn.listAllDomains(0):
        if not mine(dom):
            continue
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                problems.append(f"domain {dom.name()}: {exc}")
    if pool_name is None:
        return problems
    try:
        pool = conn.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError:
        return problems
    try:
        if pool.isActive():
            for volume in pool.listAllVolumes(0):
                volume.delete(0)
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError as exc:
        problems.append(f"pool {pool_name}: {exc}")
    return problems


def purge_stale() -> list[str]:
    """What runs killed with SIGKILL left: their domains, pools and directories (their pid is gone)."""
    import libvirt

    conn = libvirt.open(URI)
    purged = []
    try:
        dirs = {m.group(0): int(m.group(1)) for p in Path(tempfile.gettempdir()).glob(f"{PREFIX}*")
                if (m := re.fullmatch(rf".*/{PREFIX}(\d+)-\w+", str(p)))}
        pools = {}
        for name in conn.listStoragePools() + conn.listDefinedStoragePools():
            if (m := re.fullmatch(rf"cloudland-{HOST_PREFIX}(\d+)-[0-9a-f]+", name)):
                pools[name] = int(m.group(1))
        floor = re.compile(r"clbench-(\d+)-[0-9a-f]+-floor-")
        in_dir = re.compile(rf"/{PREFIX}(\d+)-")

        def stale(dom: Any) -> bool:
            try:
                m = floor.match(dom.name()) or in_dir.search(dom.XMLDesc(0))
            except libvirt.libvirtError:
                return False
            return m is not None and not psutil.pid_exists(int(m.group(1)))

        stale_doms = [str(d.name()) for d in conn.listAllDomains(0) if stale(d)]
        _remove_run(conn, stale, None)
        purged += [f"domain {n}" for n in stale_doms]
        for name, pid in pools.items():
            if not psutil.pid_exists(pid):
                _remove_run(conn, lambda _d: False, name)
                purged.append(f"pool {name}")
        for path, pid in dirs.items():
            if not psutil.pid_exists(pid):
                shutil.rmtree(path, ignore_errors=True)
                purged.append(path)
    finally:
        conn.close()
    return purged


def _tail(path: Path, max_bytes: int) -> str:
    """The end of a file, as ``ComputeDriver.console`` reads it ("" while it does not exist)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - max_bytes))
            return f.read(max_bytes).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _pct(values: list[float], pct: int) -> float | None:
    """Nearest rank: with five launches, p95 is the slowest."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1], 3)


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


# Output ---------------------------------------------------------------------------------


def format_table(out: dict[str, Any]) -> str:
    """One row per mode and concurrency, each figure beside the floor's at that concurrency."""
    floors = {lv["concurrency"]: lv for lv in out["levels"] if lv["mode"] == "floor"}
    columns = [("launches/min", "per_min"), ("launch-only/min", "launch_only_per_min"),
               ("latency p50 s", "latency_p50_s"), ("p95 s", "latency_p95_s"),
               ("cpu s/launch", "cpu_s_per_launch"), ("machine cpu s/launch", "machine_cpu_s_per_launch")]
    head = (["mode", "conc", "ok/n", "wall s"] + [f"{title} (floor)" for title, _ in columns]
            + ["teardown cpu s", "teardown p50 s"])
    rows = [head]
    for lv in out["levels"]:
        floor = floors.get(lv["concurrency"])
        row = [lv["mode"], str(lv["concurrency"]), f"{lv['launches']}/{lv['planned']}", _fmt(lv["wall_s"])]
        for _, key in columns:
            beside = f" ({_fmt(floor[key])})" if floor is not None and lv["mode"] != "floor" else ""
            row.append(_fmt(lv[key]) + beside)
        row += [_fmt(lv["teardown_cpu_s_per_launch"]), _fmt(lv["delete_p50_s"])]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    best: dict[str, tuple[float, int]] = {}
    for lv in out["levels"]:
        if lv["per_min"] is not None and lv["per_min"] > best.get(lv["mode"], (0.0, 0))[0]:
            best[lv["mode"]] = (lv["per_min"], lv["concurrency"])
    here = ", ".join(f"{mode} {rate:g}/min (concurrency {c})" for mode, (rate, c) in best.items())
    lines += ["", f"{CLAIM}; best here: {here or 'nothing measured'}.",
              f"cpu s/launch: {out['cpu_accounting']}.",
              f"wall: {out['wall']}. launch-only/min: {out['launch_only']}.",
              f"images: {out['image_source']}.",
              (f"other domains running on this libvirtd: {out['other_domains_running_at_start']} at start, "
               f"{out.get('other_domains_running_at_end', '?')} at end.")]
    if out.get("interrupted"):
        lines.append("interrupted: the level under way is not reported")
    if out.get("error"):
        lines.append(f"stopped by an error: {out['error']}")
    for lv in out["levels"]:
        for err in lv.get("errors", []):
            lines.append(f"error in {lv['mode']} at concurrency {lv['concurrency']}: {err}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: a comma-separated list of whole numbers") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: at least one, each 1 or more")
    return values


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown:
        raise click.BadParameter(f"{text!r}: a comma-separated list of {', '.join(MODES)}")
    return modes


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt()


def _announce_cleanup(_signum: int, _frame: FrameType | None) -> None:
    print("cleaning up this run's domains, pool and files; a moment", file=sys.stderr)


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Where to write the results [default: bench/results/compute-<timestamp>.json].")
@click.option("--concurrency", default=",".join(map(str, CONCURRENCY)), show_default=True,
              help="Concurrency levels, comma-separated.")
@click.option("--launches", type=click.IntRange(1), help="Launches per level [default: max(2*concurrency, 5)].")
@click.option("--modes", default=",".join(MODES), show_default=True, help="Modes, comma-separated.")
def main(json_path: str | None, concurrency: str, launches: int | None, modes: str) -> None:
    """Launches per hypervisor per minute on this machine (see the module's docstring)."""
    cfg = Config(_ints(concurrency), launches, _modes(modes))
    if os.geteuid() != 0:
        raise click.ClickException("needs root: guests on qemu:///system")
    setup_logging("warning", service="bench-compute")
    started = libvirtd.ensure_running()  # and stopped at the end, if this run started it
    guest = tiny.build(GUEST_CACHE)
    for what in purge_stale():
        click.echo(f"removed what an earlier killed run left: {what}", err=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    bench = ComputeBench(cfg, guest)
    status = 0
    try:
        bench.run()
    except (KeyboardInterrupt, Interrupted):
        bench.stop.set()
        bench.out["interrupted"] = True
        status = 130
    except Exception as exc:  # noqa: BLE001 - still clean up and report what was measured
        bench.stop.set()
        traceback.print_exc()
        bench.out["error"] = _error(exc)
        status = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _announce_cleanup)
        problems = bench.cleanup()
        libvirtd.stop(started)
    bench.out["cleanup_problems"] = problems
    if problems or any(lv["failed"] for lv in bench.out["levels"]):
        status = status or 1
    path = Path(json_path) if json_path else RESULTS_DIR / f"compute-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bench.out, indent=2) + "\n")
    click.echo(format_table(bench.out))
    click.echo(f"\nwritten to {path}")
    sys.exit(status)


if __name__ == "__main__":
    main()
