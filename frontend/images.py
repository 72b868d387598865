"""The image files the frontend keeps, one per image at ``<root>/<image id>``.

An upload streams into a temporary file in the same directory, hashed and counted as it
arrives, and is renamed into place only once every check has passed: a reader of
``path(id)`` never sees a partial or refused file, and a refused upload leaves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

__all__ = ["MAX_IMAGE_BYTES", "SUBDIR", "QCOW2_MAGIC", "ImageStore", "Refused", "TooLarge"]

MAX_IMAGE_BYTES = 64 << 30
#: the store's directory under the frontend's data_dir
SUBDIR = "images"
QCOW2_MAGIC = b"QFI\xfb"

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


class ImageStore:
    def __init__(self, root: Path, max_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path(self, image_id: str) -> Path:
        if not _ID.fullmatch(image_id):
            raise ValueError(f"not an image id: {image_id!r}")
        return self.root / image_id

    def receive(self, image_id: str, chunks: Iterable[bytes], expected_sha256: str | None,
                fmt: str) -> tuple[str, int]:
        """Store the file of ``image_id`` from ``chunks``; return its sha256 hex and size.

        Raises ``Refused`` (and removes what was written) if the file is empty, is larger than
        ``max_bytes``, does not start like a ``fmt`` file, or does not hash to ``expected_sha256``.
        """
        final = self.path(image_id)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=f".{image_id}.", suffix=".part")
        try:
            digest = hashlib.sha256()
            size = 0
            head = b""
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLarge(f"the file is larger than the limit of {self.max_bytes} bytes")
                    if len(head) < len(QCOW2_MAGIC):
                        head += chunk[:len(QCOW2_MAGIC) - len(head)]
                        # Refuse at the first wrong byte rather than after receiving gigabytes.
                        if fmt == "qcow2" and not QCOW2_MAGIC.startswith(head):
                            raise Refused("the file is not a qcow2 image", "format")
                    digest.update(chunk)
                    out.write(chunk)
                if size == 0:
                    raise Refused("the file is empty", "file")
                if fmt == "qcow2" and head != QCOW2_MAGIC:
                    raise Refused("the file is not a qcow2 image", "format")
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
        return checksum, size

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
