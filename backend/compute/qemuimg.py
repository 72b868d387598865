"""``qemu-img``, for what libvirt's storage API does not offer: an instance's disk flattened into a file
outside the pool.  Run as an argument list, never through a shell."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .exceptions import HypervisorError

__all__ = ["flatten"]

QEMU_IMG = "qemu-img"


def flatten(source: Path, dest: Path, timeout_s: float) -> None:
    """Write the qcow2 ``source``, read through its whole backing chain, as one self-contained qcow2
    ``dest``; nothing is left at ``dest`` if that fails."""
    argv = [QEMU_IMG, "convert", "-f", "qcow2", "-O", "qcow2", str(source), str(dest)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise HypervisorError(f"{QEMU_IMG} is not installed on this host (Debian: qemu-utils)") from None
    except subprocess.TimeoutExpired:
        dest.unlink(missing_ok=True)
        raise HypervisorError(f"flattening {source} took over {timeout_s:g} s") from None
    if proc.returncode != 0:
        dest.unlink(missing_ok=True)
        raise HypervisorError(f"flattening {source}: {QEMU_IMG} convert exited {proc.returncode}: "
                              f"{proc.stderr.strip()[-500:]}")
