"""Image files cached on this hypervisor, one per image at ``<root>/<image id>``, fetched once; and
images made here (from an instance's disk) sent to the frontend.

Instances' root disks are qcow2 overlays over these files, so many instances share one
download.  A file is fetched from the frontend over the spec's signed link into a temporary
file, hashed as it streams, and renamed into place only once its sha256 is the spec's: a
cached file is always a whole, verified one, and is never fetched again while it is cached.
An image made here streams to the frontend over a signed upload link, hashed as it goes.

Cached files no instance uses are evicted by age and by the cache's size (``evict``, called by
``eviction.Sweeper``).  A file's mtime is its last use: set by its download, and again by each
launch that finds it cached.  A launch pins its files from before it looks for them until its
instance reads them (``pinned``), so no eviction takes a file from under a launch.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Set
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urlsplit

import httpx
import structlog

from .domain import DiskFormat
from .exceptions import ImageError
from .locks import KeyedLocks

__all__ = ["CacheLimits", "ImageCache", "Sent"]

log = structlog.get_logger("backend.compute")

QCOW2_MAGIC = b"QFI\xfb"
#: where a qcow2 header holds the virtual size: a big-endian u64 at byte 24
_QCOW2_SIZE = struct.Struct(">Q")
_QCOW2_SIZE_AT = 24
_CHUNK = 1 << 20
#: the frontend checks and syncs a whole upload before it answers
_UPLOAD_READ_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class Sent:
    """What an upload sent."""

    checksum: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """When a cached file no instance uses goes (``compute.image_cache_*``); 0: no such limit."""

    #: seconds after its last use
    max_age_s: float = 0.0
    #: the bytes of every cached file together, beyond which the least recently used go
    max_bytes: int = 0


class ImageCache:
    def __init__(self, root: Path, timeout_s: float = 60.0, verify: ssl.SSLContext | bool = True,
                 limits: CacheLimits = CacheLimits()) -> None:
        """``verify``: what the frontend's certificate is checked against (True: the system's CAs)."""
        self.root = root
        self.limits = limits
        #: told of each image downloaded (the cache grew: time to look at its size)
        self.on_download: Callable[[], None] | None = None
        self._pins: collections.Counter[str] = collections.Counter()
        #: pins change, and evictions check them and remove a file, under it: one or the other comes first
        self._pin_guard = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        # What a killed backend left half-downloaded; no download runs yet, so all of it is stale.
        for part in self.root.glob(".*.part"):
            part.unlink(missing_ok=True)
        self._locks = KeyedLocks()
        # trust_env=False: the frontend is inside the cluster; a host's HTTP(S)_PROXY must not
        # route (and see) the signed links.
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0), trust_env=False, verify=verify)

    def close(self) -> None:
        self._client.close()

    def path(self, image_id: str) -> Path:
        return self.root / image_id

    def ensure(self, image_id: str, url: str, sha256: str, fmt: DiskFormat) -> Path:
        """The cached file of ``image_id``, downloaded from ``url`` first if need be.

        Raises ``ImageError`` naming the image if the download fails, or if the file's sha256 is
        not ``sha256`` (the file is then removed).  Concurrent calls for one image download it once.
        """
        final = self.path(image_id)
        with self._locks.hold(image_id):
            try:
                os.utime(final)  # its last use, which eviction goes by
            except FileNotFoundError:
                self._download(image_id, url, sha256.lower(), fmt, final)
                if self.on_download is not None:
                    self.on_download()
            except OSError as exc:
                raise ImageError(f"image {image_id}: cannot use {final}: {exc}") from exc
        return final

    @contextlib.contextmanager
    def pinned(self, image_ids: Collection[str]) -> Iterator[None]:
        """Keep ``image_ids`` from eviction meanwhile: hold it from before ``ensure`` until an
        instance reads the files (its overlay and definition exist)."""
        with self._pin_guard:
            self._pins.update(image_ids)
        try:
            yield
        finally:
            with self._pin_guard:
                self._pins.subtract(image_ids)
                self._pins += collections.Counter()  # drops the zeros

    def evict(self, in_use: Set[Path]) -> list[str]:
        """Remove the cached files that ``limits`` say go and that no instance uses (``in_use``: the
        files this host's instances read) nor any launch pins; their ids, least recently used first.

        Downloads under way write to hidden temporary files, which are neither counted nor touched.
        """
        max_age_s, max_bytes = self.limits.max_age_s, self.limits.max_bytes
        if not max_age_s and not max_bytes:
            return []
        cached = []
        for path in self.root.iterdir():
            if path.name.startswith("."):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            cached.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in cached)
        used = {Path(os.path.realpath(p)) for p in in_use}
        now = time.time()
        evicted = []
        for mtime, size, path in sorted(cached):
            too_old = bool(max_age_s) and now - mtime > max_age_s
            too_big = bool(max_bytes) and total > max_bytes
            if not (too_old or too_big) or Path(os.path.realpath(path)) in used:
                continue
            with self._pin_guard:
                # A launch since the look (its mtime moved) may have made an instance ``in_use`` misses.
                if self._pins[path.name] or _mtime(path) != mtime:
                    continue
                path.unlink()
            total -= size
            evicted.append(path.name)
            log.info("image_evicted", image=path.name, bytes=size, unused_s=round(now - mtime),
                     reason="age" if too_old else "size", cache_bytes=total)
        return evicted

    def virtual_size(self, image_id: str, fmt: DiskFormat) -> int:
        """The size of the disk a cached image is: its qcow2 header's virtual size, or its raw length."""
        path = self.path(image_id)
        try:
            if fmt != "qcow2":
                return path.stat().st_size
            with path.open("rb") as f:
                f.seek(_QCOW2_SIZE_AT)
                field = f.read(_QCOW2_SIZE.size)
        except OSError as exc:
            raise ImageError(f"image {image_id}: cannot read {path}: {exc}") from exc
        if len(field) < _QCOW2_SIZE.size:
            raise ImageError(f"image {image_id}: the file ends within its qcow2 header")
        return int(_QCOW2_SIZE.unpack(field)[0])

    def upload(self, image_id: str, path: Path, url: str) -> Sent:
        """Send the file at ``path`` to ``url``, a signed upload link to the file of ``image_id``.

        Raises ``ImageError`` naming the image if it cannot be sent or the frontend refuses it (with
        the frontend's reason).
        """
        source = urlsplit(url).netloc  # the link's query is a credential: never log it
        started = time.monotonic()
        digest = hashlib.sha256()
        sent = 0

        def chunks(f: BinaryIO) -> Iterator[bytes]:
            nonlocal sent
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                sent += len(chunk)
                yield chunk

        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                response = self._client.put(
                    url, content=chunks(f), timeout=httpx.Timeout(self._client.timeout.connect,
                                                                  read=_UPLOAD_READ_TIMEOUT_S),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        except httpx.HTTPError as exc:
            trust = "; set compute.frontend_ca_file to the frontend's CA certificate" if _untrusted(exc) else ""
            raise ImageError(f"image {image_id}: cannot upload it to {source}: {exc}{trust}") from exc
        except OSError as exc:
            raise ImageError(f"image {image_id}: cannot read {path}: {exc}") from exc
        if response.status_code != 200:
            raise ImageError(f"image {image_id}: {source} refused the upload: {response.status_code} "
                             f"{_reason(response)}")
        log.info("image_uploaded", image=image_id, source=source, bytes=sent,
                 seconds=round(time.monotonic() - started, 3))
        return Sent(digest.hexdigest(), sent)

    def _download(self, image_id: str, url: str, sha256: str, fmt: DiskFormat, final: Path) -> None:
        source = urlsplit(url).netloc  # the link's query is a credential: never log it
        started = time.monotonic()
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=f".{image_id}.", suffix=".part")
        try:
            digest = hashlib.sha256()
            size = 0
            head = b""
            with os.fdopen(fd, "wb") as out:
                with self._client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise ImageError(f"image {image_id}: {source} answered {response.status_code} "
                                         f"{response.reason_phrase} to the download")
                    for chunk in response.iter_bytes(_CHUNK):
                        if len(head) < len(QCOW2_MAGIC):
                            head += chunk[:len(QCOW2_MAGIC) - len(head)]
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                raise ImageError(f"image {image_id}: the file downloaded from {source} has sha256 "
                                 f"{digest.hexdigest()}, not {sha256}; it was removed")
            # A wrong format would only show later, as an obscure failure to create the overlay.
            if fmt == "qcow2" and head != QCOW2_MAGIC:
                raise ImageError(f"image {image_id}: declared qcow2, but the file is not a qcow2 image")
            os.replace(temp, final)
        except BaseException as exc:
            Path(temp).unlink(missing_ok=True)
            if isinstance(exc, httpx.HTTPError) and _untrusted(exc):
                raise ImageError(f"image {image_id}: cannot download it from {source}: the frontend's TLS "
                                 f"certificate is not trusted ({exc}); set compute.frontend_ca_file in this "
                                 "backend's config to the frontend's CA certificate") from exc
            if isinstance(exc, httpx.HTTPError):
                raise ImageError(f"image {image_id}: cannot download it from {source}: {exc}") from exc
            if isinstance(exc, OSError):
                raise ImageError(f"image {image_id}: cannot store it in {self.root}: {exc}") from exc
            raise
        log.info("image_downloaded", image=image_id, source=source, bytes=size,
                 seconds=round(time.monotonic() - started, 3))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _reason(response: httpx.Response) -> str:
    """The frontend's error message, or the HTTP reason phrase for an answer that is not its error shape."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.reason_phrase


def _untrusted(exc: BaseException) -> bool:
    """Whether the certificate check failed somewhere down ``exc``'s chain of causes."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
