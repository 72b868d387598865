"""The bodies of the compute ops of ``docs/ops.md``: their schemas, and the typed spec of a launch.

The registry checks every body against its op's schema in ``ARGS`` before the handler runs
(``backend/argcheck.py``): ids are UUIDs (they become domain names and file names), the name
is a name (it becomes the guest's host name), sizes are in range, MACs and URLs are well
formed, and nothing else is in it.  ``instance_spec`` then only converts, and adds the one
rule a schema does not say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..argcheck import (
    IPV4,
    MAC,
    NAME,
    SHA256,
    UUID,
    Bytes,
    Int,
    ListOf,
    Number,
    OneOf,
    Record,
    Text,
    Url,
    nullable,
    optional,
)
from .domain import DiskFormat
from .exceptions import BadRequest

__all__ = ["ARGS", "ImageFile", "InstanceSpec", "PortSpec", "instance_spec"]

_FORMATS: dict[str, DiskFormat] = {"qcow2": "qcow2", "raw": "raw"}
MAX_GB = 1 << 20
MAX_VCPUS = 1024
MIN_MEMORY_MB, MAX_MEMORY_MB = 16, 1 << 24
#: as the API allows them (``frontend/api/routes/instances.py``, ``keypairs.py``), in characters
MAX_USER_DATA = 64 << 10
MAX_SSH_KEY = 16 << 10
#: bounds the work one body can ask for; far above what the API lets through (8 NICs, 1 key,
#: 25 disk slots)
MAX_ITEMS = 32
MAX_CONSOLE_BYTES = 1 << 20
MAX_STOP_TIMEOUT_S = 3600.0
#: a live console's input per write: far above what anyone types between two writes
MAX_CONSOLE_INPUT = 64 << 10
MAX_CONSOLE_LEASE_S = 600.0
#: a live console session's id, chosen by the frontend
_SESSION = UUID

_IMAGE_FILE = Record({
    "id": UUID,
    "format": OneOf(tuple(_FORMATS)),
    "checksum": SHA256,
    "size_bytes": nullable(Int(0, MAX_GB << 30)),
    # a signed, expiring link: a credential (argcheck never shows text in its errors)
    "url": Url(),
})
_INSTANCE = Record({
    "instance_id": UUID,
    "name": NAME,
    "vcpus": Int(1, MAX_VCPUS),
    "memory_mb": Int(MIN_MEMORY_MB, MAX_MEMORY_MB),
    "disk_gb": Int(1, MAX_GB),
    "image": _IMAGE_FILE,
    "kernel": nullable(_IMAGE_FILE),
    "initrd": nullable(_IMAGE_FILE),
    "ssh_keys": ListOf(Text(MAX_SSH_KEY, nonempty=True, one_line=True), MAX_ITEMS),
    "user_data": Text(MAX_USER_DATA),
    "ports": ListOf(Record({"id": UUID, "mac": MAC, "ip": IPV4, "subnet_id": UUID, "network_id": UUID}),
                    MAX_ITEMS),
    "volumes": ListOf(Record({"id": UUID, "size_gb": Int(1, MAX_GB)}), MAX_ITEMS),
})
_ON_INSTANCE = Record({"instance_id": UUID})
_VOLUME_AND_INSTANCE = Record({"volume_id": UUID, "instance_id": UUID})

#: op -> the schema of its body, as ``frontend/hostops.py`` and the workflows build it
ARGS: dict[str, Record] = {
    "instance.create": Record({"instance": _INSTANCE}),
    "instance.delete": _ON_INSTANCE,
    "instance.start": _ON_INSTANCE,
    "instance.stop": Record({"instance_id": UUID, "timeout_s": optional(Number(0, MAX_STOP_TIMEOUT_S))}),
    "instance.reboot": _ON_INSTANCE,
    "instance.resize": Record({"instance_id": UUID, "vcpus": Int(1, MAX_VCPUS),
                               "memory_mb": Int(MIN_MEMORY_MB, MAX_MEMORY_MB), "disk_gb": Int(1, MAX_GB)}),
    "instance.console": Record({"instance_id": UUID, "bytes": optional(Int(1, MAX_CONSOLE_BYTES))}),
    # the link is a signed, expiring upload link to the image's file: a credential
    "instance.image": Record({"instance_id": UUID, "image_id": UUID, "url": Url()}),
    "volume.create": Record({"volume_id": UUID, "size_gb": Int(1, MAX_GB), "snapshot_id": optional(UUID)}),
    "volume.delete": Record({"volume_id": UUID}),
    "volume.attach": _VOLUME_AND_INSTANCE,
    "volume.detach": _VOLUME_AND_INSTANCE,
    "volume.snapshot": Record({"volume_id": UUID, "snapshot_id": UUID}),
    "snapshot.delete": Record({"snapshot_id": UUID}),
    "compute.inventory": Record({}),
    "console.open": Record({"instance_id": UUID, "session": _SESSION, "lease_s": Number(1, MAX_CONSOLE_LEASE_S)}),
    "console.write": Record({"session": _SESSION, "data": Bytes(MAX_CONSOLE_INPUT)}),
    "console.close": Record({"session": _SESSION}),
}


@dataclass(frozen=True, slots=True)
class ImageFile:
    """A file on the frontend: the root disk's image, or a kernel or initrd."""

    id: str
    format: DiskFormat
    #: sha256 hex
    checksum: str
    #: a signed, expiring link; a credential, never logged
    url: str


@dataclass(frozen=True, slots=True)
class PortSpec:
    id: str
    mac: str


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    instance_id: str
    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image: ImageFile
    kernel: ImageFile | None
    initrd: ImageFile | None
    ssh_keys: tuple[str, ...]
    user_data: str
    ports: tuple[PortSpec, ...]
    volume_ids: tuple[str, ...]


def _image_file(raw: dict[str, Any]) -> ImageFile:
    return ImageFile(raw["id"], _FORMATS[raw["format"]], raw["checksum"], raw["url"])


def instance_spec(spec: dict[str, Any]) -> InstanceSpec:
    """The ``instance`` of an ``instance.create`` body that passed ``ARGS``."""
    if spec["initrd"] is not None and spec["kernel"] is None:
        raise BadRequest("args.instance.initrd: an initrd needs a kernel")
    return InstanceSpec(
        instance_id=spec["instance_id"], name=spec["name"],
        vcpus=spec["vcpus"], memory_mb=spec["memory_mb"], disk_gb=spec["disk_gb"],
        image=_image_file(spec["image"]),
        kernel=_image_file(spec["kernel"]) if spec["kernel"] is not None else None,
        initrd=_image_file(spec["initrd"]) if spec["initrd"] is not None else None,
        ssh_keys=tuple(spec["ssh_keys"]), user_data=spec["user_data"],
        ports=tuple(PortSpec(port["id"], port["mac"].lower()) for port in spec["ports"]),
        volume_ids=tuple(volume["id"] for volume in spec["volumes"]),
    )
