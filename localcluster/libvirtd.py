"""A running libvirtd (with virtlogd) for a local cluster's hypervisors and the tests that boot real guests.

Machines without systemd, so nothing starts libvirt's daemons: ``ensure_running()`` starts
``virtlogd -d`` and ``libvirtd -d`` by hand when they are not running yet, and waits until
``qemu:///system`` answers (the first connection after a start takes several seconds while
libvirtd probes QEMU's capabilities). The daemons are shared system services and are left
running: a test cleans up its own domains, pools and volumes, it never stops libvirtd.

Packages and configuration come from ``scripts/ensure-libvirt.sh`` (run as root by
``make test``/``make run``): that script installs, this module starts. Guests must be
``<domain type='qemu'>`` (TCG): /dev/kvm here belongs to a PVM kernel on which KVM guests hang.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
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


def ensure_running(timeout: float = 60) -> None:
    """Start virtlogd and libvirtd unless they run, and wait until ``qemu:///system`` answers.

    Raises RuntimeError, with the tail of libvirtd's log, when they cannot be started or
    no connection works within ``timeout`` seconds. Needs root to start the daemons.
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
    with _lock():
        connects = _connects(libvirt)
        if connects and is_running("virtlogd"):
            return
        if os.geteuid() != 0:
            raise RuntimeError(f"cannot use {URI}, and only root can start libvirtd/virtlogd")
        if not is_running("virtlogd"):  # first: QEMU's stdio goes through it
            _start("virtlogd")
        if connects:
            return
        if not is_running("libvirtd"):
            _start("libvirtd")
        last_error = ""
        while True:
            try:
                conn = libvirt.open(URI)
            except libvirt.libvirtError as exc:
                last_error = str(exc)
            else:
                conn.close()
                return
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
        for pool in conn.listAllStoragePools(0):
            if _under(pool.XMLDesc(0) + "/", path):
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
                removed += 1
        return removed
    finally:
        conn.close()
