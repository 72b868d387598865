"""The image files the frontend keeps, one per image at ``<root>/<image id>``.

An upload streams into a temporary file in the same directory, hashed and counted as it
arrives, and is renamed into place only once every check has passed: a reader of
``path(id)`` never sees a partial or refused file, and a refused upload leaves nothing.

The size of the disk an image needs is read from the file itself, never taken from the
uploader: a qcow2 file's header holds its virtual size, and a raw file is its own length.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["GIB", "MAX_DISK_GB", "MAX_IMAGE_BYTES", "SUBDIR", "QCOW2_MAGIC", "ImageStore", "Received", "Refused",
           "TooLarge", "disk_gb"]

MAX_IMAGE_BYTES = 64 << 30
#: the store's directory under the frontend's data_dir
SUBDIR = "images"
QCOW2_MAGIC = b"QFI\xfb"
GIB = 1 << 30
#: the largest disk a flavor may have: an image needing more could never boot
MAX_DISK_GB = 64 * 1024
#: the start of a qcow2 header, in the order of the format's spec: magic, version, backing file
#: offset and name length, cluster bits, and the virtual size (big-endian, at byte 24)
_QCOW2_HEADER = struct.Struct(">4sIQIIQ")

# Ids come from the database, but a path built from one must never leave the store.
_ID = re.compile(r"[0-9a-f-]{36}")


class Refused(Exception):
    """The file is not what was declared; nothing of it was kept.  ``field`` names the declaration."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class TooLarge(Refused):
    pass


def disk_gb(virtual_size_bytes: int) -> int:
    """The smallest disk, in whole GiB as flavors give them, that holds ``virtual_size_bytes``."""
    return -(-virtual_size_bytes // GIB)


def _check_qcow2(head: bytes) -> int | None:
    """Refuse ``head``, the first bytes of a file declared qcow2, at the first byte that is wrong;
    once it holds the whole header, answer the virtual size (None before)."""
    if not QCOW2_MAGIC.startswith(head[:len(QCOW2_MAGIC)]):
        raise Refused("the file is not a qcow2 image", "format")
    if len(head) < _QCOW2_HEADER.size:
        return None
    _, version, backing_offset, _, _, size = _QCOW2_HEADER.unpack(head[:_QCOW2_HEADER.size])
    if version not in (2, 3):
        raise Refused(f"the file is not a qcow2 image: its header says version {version}, not 2 or 3", "format")
    # QEMU would follow the named file on whichever hypervisor boots it.
    if backing_offset:
        raise Refused("the qcow2 image has a backing file; upload a self-contained one (qemu-img convert -O qcow2)",
                      "file")
    if size == 0:
        raise Refused("the qcow2 image's virtual size is 0 bytes", "file")
    if size > MAX_DISK_GB * GIB:
        raise Refused(f"the qcow2 image's virtual size of {size} bytes is larger than any flavor's disk "
                      f"({MAX_DISK_GB} GB)", "file")
    return int(size)


@dataclass(frozen=True)
class Received:
    """What an accepted upload turned out to be."""

    checksum: str
    size_bytes: int
    #: the size of the disk the image is: a qcow2 header's virtual size, or a raw file's length
    virtual_size_bytes: int


class ImageStore:
    def __init__(self, root: Path, max_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path(self, image_id: str) -> Path:
        if not _ID.fullmatch(image_id):
            raise ValueError(f"not an image id: {image_id!r}")
        return self.root / image_id

    def receive(self, image_id: str, chunks: Iterable[bytes], expected_sha256: str | None,
                fmt: str) -> Received:
        """Store the file of ``image_id`` from ``chunks``.

        Raises ``Refused`` (and removes what was written) if the file is empty, is larger than
        ``max_bytes``, does not start like a ``fmt`` file (for qcow2: a whole header of version 2
        or 3, without a backing file, of a virtual size a flavor can hold), or does not hash to
        ``expected_sha256``.
        """
        final = self.path(image_id)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=f".{image_id}.", suffix=".part")
        try:
            digest = hashlib.sha256()
            size = 0
            head = b""
            virtual: int | None = None
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLarge(f"the file is larger than the limit of {self.max_bytes} bytes")
                    if len(head) < _QCOW2_HEADER.size:
                        head += chunk[:_QCOW2_HEADER.size - len(head)]
                        # Refuse at the first wrong byte rather than after receiving gigabytes.
                        if fmt == "qcow2":
                            virtual = _check_qcow2(head)
                    digest.update(chunk)
                    out.write(chunk)
                if size == 0:
                    raise Refused("the file is empty", "file")
                if fmt == "qcow2" and virtual is None:
                    raise Refused("the file is not a qcow2 image: it ends within the header", "format")
                out.flush()
                os.fsync(out.fileno())
            checksum = digest.hexdigest()
            if expected_sha256 is not None and checksum != expected_sha256:
                raise Refused(f"the file's sha256 is {checksum}, not the declared {expected_sha256}", "checksum")
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        self._sync_dir()
        return Received(checksum, size, size if virtual is None else virtual)

    def virtual_size(self, image_id: str, fmt: str) -> int:
        """The virtual size of a stored file, read as ``receive`` read it; OSError if it is gone."""
        path = self.path(image_id)
        if fmt != "qcow2":
            return path.stat().st_size
        with path.open("rb") as f:
            virtual = _check_qcow2(f.read(_QCOW2_HEADER.size))
        if virtual is None:
            raise Refused("the file is not a qcow2 image: it ends within the header", "format")
        return virtual

    def discard_partial(self) -> int:
        """Remove the temporary files of uploads a killed frontend never finished."""
        if not self.root.is_dir():
            return 0
        parts = list(self.root.glob(".*.part"))
        for part in parts:
            part.unlink(missing_ok=True)
        return len(parts)

    def remove(self, image_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(image_id).unlink()

    def _sync_dir(self) -> None:
        """Make the rename durable, so that an image marked active after a crash still has its file."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
