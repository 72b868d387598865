"""Stand-ins for qcow2 images where only the header is read (the frontend's upload checks, the
backend's disk size check) and nothing boots them."""

from __future__ import annotations

import struct

__all__ = ["fake_qcow2"]

#: magic, version, backing file offset and name length, cluster bits, virtual size
_HEADER = struct.Struct(">4sIQIIQ")


def fake_qcow2(virtual_size: int = 1 << 20, length: int = 4096, version: int = 3, backing_offset: int = 0) -> bytes:
    """``length`` bytes starting with a qcow2 header of ``virtual_size``, the rest zeros."""
    header = _HEADER.pack(b"QFI\xfb", version, backing_offset, 0, 16, virtual_size)
    return header + bytes(length - len(header))
