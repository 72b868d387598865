"""Signed, expiring download links to image files, for hypervisors.

A launch's spec carries a link for each file the hypervisor must fetch.  The link itself is
the authority (an HMAC over the image id and an expiry, with a key only the frontend holds),
so hypervisors need no API token, and a link read from a log stops working after its expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

__all__ = ["ImageLinks"]

KEY_FILE = "image-links.key"


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

    def _signature(self, image_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{image_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, image_id: str) -> str:
        expires = int(time.time() + self.ttl_s)
        return (f"{self.base_url}/v1/images/{image_id}/file"
                f"?expires={expires}&signature={self._signature(image_id, expires)}")

    def valid(self, image_id: str, expires: int, signature: str) -> bool:
        return expires >= time.time() and hmac.compare_digest(self._signature(image_id, expires), signature)
