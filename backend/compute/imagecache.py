"""Image files cached on this hypervisor, one per image at ``<root>/<image id>``, fetched once; and
images made here (from an instance's disk) sent to the frontend.

Instances' root disks are qcow2 overlays over these files, so many instances share one
download.  A file is fetched from the frontend over the spec's signed link into a temporary
file, hashed as it streams, and renamed into place only once its sha256 is the spec's: a
cached file is always a whole, verified one, and is never fetched again.  An image made here
streams to the frontend over a signed upload link, hashed as it goes.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urlsplit

import httpx
import structlog

from .domain import DiskFormat
from .exceptions import ImageError
from .locks import KeyedLocks

__all__ = ["ImageCache", "Sent"]

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


class ImageCache:
    def __init__(self, root: Path, timeout_s: float = 60.0, verify: ssl.SSLContext | bool = True) -> None:
        """``verify``: what the frontend's certificate is checked against (True: the system's CAs)."""
        self.root = root
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
            if not final.exists():
                self._download(image_id, url, sha256.lower(), fmt, final)
        return final

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
