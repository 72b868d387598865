"""Signed, expiring links to image files, for hypervisors: downloads, and uploads of images made there.

A launch's spec carries a link for each file the hypervisor must fetch; an image made from an
instance's disk comes back over an upload link.  The link itself is the authority (an HMAC over
its purpose, the image id and an expiry, with a key only the frontend holds), so hypervisors
need no API token, and a link read from a log stops working after its expiry.  The purposes
sign different messages, so a download link never authorizes an upload, nor the reverse.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

__all__ = ["DOWNLOAD", "UPLOAD", "ImageLinks"]

KEY_FILE = "image-links.key"
DOWNLOAD, UPLOAD = "download", "upload"


class ImageLinks:
    def __init__(self, key: bytes, base_url: str, ttl_s: float) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s

    @classmethod
    def load(cls, data_dir: Path, base_url: str, ttl_s: float) -> "ImageLinks":
        """With the key kept in ``data_dir`` (made on first use, mode 0600), so links outlive a restart."""
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return cls(bytes.fromhex(path.read_text().strip()), base_url, ttl_s)

    def _signature(self, purpose: str, image_id: str, expires: int) -> str:
        # A download signs the message it signed before uploads existed, so that links in the
        # journalled commands of launches under way keep working across an upgrade.  An image id
        # never contains ":", so no download message is ever an upload's.
        message = f"{image_id}:{expires}" if purpose == DOWNLOAD else f"{purpose}:{image_id}:{expires}"
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def _link(self, purpose: str, image_id: str, ttl_s: float) -> str:
        expires = int(time.time() + ttl_s)
        return (f"{self.base_url}/v1/images/{image_id}/file"
                f"?expires={expires}&signature={self._signature(purpose, image_id, expires)}")

    def url(self, image_id: str) -> str:
        """A link to GET the file of ``image_id``."""
        return self._link(DOWNLOAD, image_id, self.ttl_s)

    def upload_url(self, image_id: str, ttl_s: float) -> str:
        """A link to PUT the file of ``image_id``, valid for ``ttl_s`` (a copy may take long)."""
        return self._link(UPLOAD, image_id, ttl_s)

    def valid(self, image_id: str, expires: int, signature: str, purpose: str = DOWNLOAD) -> bool:
        return (expires >= time.time()
                and hmac.compare_digest(self._signature(purpose, image_id, expires), signature))
