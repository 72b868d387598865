"""libvirtd (with virtlogd) for a local cloud's hypervisors and the tests that boot real guests.

Machines without systemd start nothing by themselves: ``running()`` starts ``virtlogd -d`` and
``libvirtd -d`` when they are not running yet, waits until ``qemu:///system`` answers (the
first connection after a start takes several seconds while libvirtd probes QEMU), and stops
again what it started when the block ends.  Daemons that already ran are left alone.

Packages and configuration come from ``scripts/ensure-libvirt.sh`` (run as root by
``make test``/``make run``): that script installs, this module starts and stops.  Guests
here must be ``<domain type='qemu'>`` (TCG): /dev/kvm on this machine hangs KVM guests.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

URI = "qemu:///system"
LOG = Path("/var/log/libvirt/libvirtd.log")

_DAEMONS = {
    # name: pid file the daemon writes when started as root
    "virtlogd": Path("/run/virtlogd.pid"),
    "libvirtd": Path("/run/libvirtd.pid"),
}
_LOCK = Path("/run/cloudland-libvirtd.lock")


def qemu_available() -> bool:
    """True when QEMU, libvirtd and the libvirt Python binding are installed (running or not)."""
    if shutil.which("qemu-system-x86_64") is None:
        return False
    if not all(_binary(name) for name in _DAEMONS):
        return False
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return False
    return True


def is_running(name: str) -> bool:
    """Whether the daemon ``name`` (``libvirtd`` or ``virtlogd``) runs, by its pid file."""
    return _pid_of(name) is not None


@contextlib.contextmanager
def running(timeout: float = 60) -> Iterator[None]:
    """libvirtd (and virtlogd) for the duration of the block: started if need be, and then
    stopped again, so that a test run or a local cloud leaves the machine as it found it."""
    started = ensure_running(timeout)
    try:
        yield
    finally:
        stop(started)


def stop(names: list[str], timeout: float = 15) -> None:
    """Stop the daemons ``names`` (as ``ensure_running`` returned them), libvirtd first."""
    for name in sorted(names, key=lambda n: n != "libvirtd"):
        pid = _pid_of(name)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_of(name) == pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists() and _pid_of(name) == pid:
            os.kill(pid, signal.SIGKILL)


def ensure_running(timeout: float = 60) -> list[str]:
    """Start virtlogd and libvirtd unless they run, and wait until ``qemu:///system`` answers.

    Returns the daemons it started (for ``stop``).  Raises RuntimeError, with the tail of
    libvirtd's log, when they cannot be started or no connection works within ``timeout``
    seconds. Needs root to start the daemons.
    """
    if not qemu_available():
        raise RuntimeError(
            "libvirt/QEMU not installed: run `sh scripts/ensure-libvirt.sh` as root and "
            "`.venv/bin/python -m pip install libvirt-python`"
        )
    import libvirt

    # libvirt's default error handler prints every failed call on stderr; the failures raise
    # libvirtError anyway, so the printing is only noise (notably while waiting below).
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)

    deadline = time.monotonic() + timeout
    started: list[str] = []
    with _lock():
        connects = _connects(libvirt)
        if connects and is_running("virtlogd"):
            return started
        if os.geteuid() != 0:
            raise RuntimeError(f"cannot use {URI}, and only root can start libvirtd/virtlogd")
        if not is_running("virtlogd"):  # first: QEMU's stdio goes through it
            _start("virtlogd")
            started.append("virtlogd")
        if connects:
            return started
        if not is_running("libvirtd"):
            _start("libvirtd")
            started.append("libvirtd")
        last_error = ""
        while True:
            try:
                conn = libvirt.open(URI)
            except libvirt.libvirtError as exc:
                last_error = str(exc)
            else:
                conn.close()
                return started
            if not is_running("libvirtd"):
                raise RuntimeError(f"libvirtd died after starting ({last_error})\n{_log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"libvirtd did not answer on {URI} within {timeout:g} s ({last_error})\n"
                    f"{_log_tail()}"
                )
            time.sleep(0.2)


def _ignore_libvirt_error(_ctx: Any, _err: Any) -> None:
    return None


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )


def _pid_of(name: str) -> int | None:
    try:
        pid = int(_DAEMONS[name].read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == name else None


def _connects(libvirt: Any) -> bool:
    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError:
        return False
    return True


def _start(name: str) -> None:
    binary = _binary(name)
    assert binary is not None
    LOG.parent.mkdir(parents=True, exist_ok=True)
    # -d forks into the background once started: the call returns when the daemon is up (or
    # with its startup error). Its own session, so the tests' process group signals miss it.
    proc = subprocess.run(
        [binary, "-d"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd="/",
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{binary} -d` failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}\n"
            f"{_log_tail()}"
        )


def _log_tail(lines: int = 30) -> str:
    try:
        text = LOG.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"(no libvirtd log: {exc})"
    return f"--- last lines of {LOG} ---\n" + "\n".join(text)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialises starts between concurrent test processes (a no-op for non-root)."""
    try:
        fd = os.open(_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _under(xml: str, path: Path) -> bool:
    return str(path.resolve()) + "/" in xml


def power_off_under(path: Path) -> int:
    """Power off (but keep) every domain whose files live under ``path``: a local cloud that stops
    takes its guests down with it, and finds them shut off when it starts again."""
    import libvirt

    conn = libvirt.open(URI)
    try:
        stopped = 0
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if _under(dom.XMLDesc(0), path):
                dom.destroy()
                stopped += 1
        return stopped
    finally:
        conn.close()


def purge_under(path: Path) -> int:
    """Remove every domain and storage pool whose files live under ``path`` (before deleting ``path``)."""
    import libvirt

    conn = libvirt.open(URI)
    try:
        removed = 0
        for dom in conn.listAllDomains(0):
            if _under(dom.XMLDesc(0), path):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
                removed += 1
        return removed + _undefine_pools(conn, path)
    finally:
        conn.close()


def release_pools_under(path: Path) -> int:
    """Undefine (keeping their files) the storage pools whose directories are under ``path``.

    libvirtd keeps a pool's definition after the cloud that made it stops, under a name made of
    the backend's (``cloudland-host000``): the test suite's clouds, or another checkout's
    ``make run``, use those names too, and would find the pool at this cloud's directory.  A
    backend defines its pool again, over the files still there, at its next start.
    """
    import libvirt

    conn = libvirt.open(URI)
    try:
        return _undefine_pools(conn, path)
    finally:
        conn.close()


def _undefine_pools(conn: Any, path: Path) -> int:
    undefined = 0
    for pool in conn.listAllStoragePools(0):
        if _under(pool.XMLDesc(0) + "/", path):
            if pool.isActive():
                pool.destroy()
            pool.undefine()
            undefined += 1
    return undefined
