"""When the image cache is swept, and what keeps a cached image: the files this host's instances read.

An image is in use while an overlay in the storage pool backs onto it (read from the overlay's
qcow2 header: libvirt's XML of a shut-off domain shows no backing chain) or any domain names it
(the kernel and initrd of direct kernel boot, a disk).  What a launch under way holds is pinned
in the cache itself (``ImageCache.pinned``).

The cache is swept after each download, the only time it grows, so that its size limit holds
from then on at one sweep per new image rather than one per launch; and hourly, because the age
limit is passed by time alone, with no event on the host to hang it on.  A sweep runs on the
sweeper's thread, never in a launch.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from .exceptions import ComputeError
from .imagecache import QCOW2_MAGIC, ImageCache

__all__ = ["Sweeper", "backing_file", "images_in_use"]

log = structlog.get_logger("backend.compute")

#: a qcow2 header: magic, version, then where the backing file's name is and how long it is
_QCOW2_BACKING = struct.Struct(">4sIQI")
#: a backing file's name is at most 1023 bytes (qcow2's own limit)
_MAX_NAME = 1023
SWEEP_INTERVAL_S = 3600.0


def backing_file(path: Path) -> Path | None:
    """The backing file named in the header of the qcow2 ``path``, absolute; None for a file that is
    no qcow2, has none, or is gone."""
    try:
        with path.open("rb") as f:
            header = f.read(_QCOW2_BACKING.size)
            if len(header) < _QCOW2_BACKING.size:
                return None
            magic, _version, offset, length = _QCOW2_BACKING.unpack(header)
            if magic != QCOW2_MAGIC or not offset or not 0 < length <= _MAX_NAME:
                return None
            f.seek(offset)
            name = f.read(length).decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    # A relative name is relative to the overlay's directory.
    return Path(os.path.realpath(path.parent / name))


def images_in_use(pool_dir: Path, domain_files: set[Path]) -> set[Path]:
    """Every file this host's instances read: the backing files of the pool's qcow2 files, and ``domain_files``."""
    used = {Path(os.path.realpath(p)) for p in domain_files}
    try:
        disks = list(pool_dir.iterdir())
    except FileNotFoundError:  # no instance made yet
        disks = []
    for disk in disks:
        backing = backing_file(disk)
        if backing is not None:
            used.add(backing)
    return used


class Sweeper:
    """Evicts from ``images`` what its limits say, on its own thread: hourly, and soon after each download."""

    def __init__(self, images: ImageCache, pool_dir: Path, domain_files: Callable[[], set[Path]],
                 interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.images = images
        self.pool_dir = pool_dir
        self.domain_files = domain_files
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="image-cache-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def wake(self) -> None:
        """Sweep soon."""
        self._wake.set()

    def sweep(self) -> list[str]:
        """Evict now; the ids evicted.  Nothing is evicted while the domains cannot be listed: an image
        a domain names might then be taken."""
        try:
            domain_files = self.domain_files()
        except ComputeError as exc:
            log.warning("image_cache_sweep_skipped", reason=str(exc))
            return []
        return self.images.evict(images_in_use(self.pool_dir, domain_files))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.sweep()
            except OSError as exc:  # the cache's disk: told, and tried again at the next sweep
                log.warning("image_cache_sweep_failed", error=str(exc))
            self._wake.wait(self.interval_s)
