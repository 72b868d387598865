"""The op bodies of ``docs/ops.md``, checked and turned into typed values.

Everything the driver and the hypervisor layer get has passed through here: ids are UUIDs
(they become domain names and file names), sizes are in range, MACs and URLs are well formed.
A body that is not is refused with ``BadRequest`` (exit 64) naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .domain import DiskFormat
from .exceptions import BadRequest

__all__ = ["Fields", "ImageFile", "InstanceSpec", "PortSpec", "instance_spec"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FORMATS: dict[str, DiskFormat] = {"qcow2": "qcow2", "raw": "raw"}
MAX_USER_DATA = 64 << 10
MAX_GB = 1 << 20


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


class Fields:
    """Typed reads of one mapping of an op's body; ``where`` names it in errors ("" for the body)."""

    def __init__(self, raw: Any, where: str = "") -> None:
        if not isinstance(raw, dict):
            raise BadRequest(f"{where or 'the body'}: must be a mapping")
        self._raw = raw
        self._where = where

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str) -> Any:
        if key not in self._raw:
            raise BadRequest(f"{self._name(key)}: missing")
        return self._raw[key]

    def uuid(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not _UUID.fullmatch(value):
            raise BadRequest(f"{self._name(key)}: must be a lowercase UUID (got {value!r})")
        return value

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        if default is not None and self._raw.get(key) is None:
            return default
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadRequest(f"{self._name(key)}: must be a whole number from {low} to {high} (got {value!r})")
        return value

    def number(self, key: str, low: float, high: float, default: float) -> float:
        value = self._raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise BadRequest(f"{self._name(key)}: must be a number from {low} to {high} (got {value!r})")
        return float(value)

    def text(self, key: str, max_len: int) -> str:
        value = self._get(key)
        if not isinstance(value, str) or len(value) > max_len:
            raise BadRequest(f"{self._name(key)}: must be text of at most {max_len} characters")
        return value

    def mapping(self, key: str) -> Fields:
        return Fields(self._get(key), self._name(key))

    def optional(self, key: str) -> Fields | None:
        value = self._raw.get(key)
        return None if value is None else Fields(value, self._name(key))

    def items(self, key: str) -> list[Fields]:
        value = self._get(key)
        if not isinstance(value, list):
            raise BadRequest(f"{self._name(key)}: must be a list")
        return [Fields(item, f"{self._name(key)}[{index}]") for index, item in enumerate(value)]

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise BadRequest(f"{self._name(key)}: must be a list of strings")
        return tuple(value)

    def image_file(self) -> ImageFile:
        fmt = self._get("format")
        if fmt not in _FORMATS:
            raise BadRequest(f"{self._name('format')}: must be qcow2 or raw (got {fmt!r})")
        checksum = self._get("checksum")
        if not isinstance(checksum, str) or not _SHA256.fullmatch(checksum):
            raise BadRequest(f"{self._name('checksum')}: must be a sha256 in lowercase hex (got {checksum!r})")
        url = self.text("url", 4096)
        if not url.startswith(("http://", "https://")):
            raise BadRequest(f"{self._name('url')}: must be an http:// or https:// link")
        return ImageFile(self.uuid("id"), _FORMATS[fmt], checksum, url)

    def port(self) -> PortSpec:
        mac = self._get("mac")
        if not isinstance(mac, str) or not _MAC.fullmatch(mac.lower()):
            raise BadRequest(f"{self._name('mac')}: must be a MAC address like 52:54:00:12:34:56 (got {mac!r})")
        return PortSpec(self.uuid("id"), mac.lower())


def instance_spec(body: Fields) -> InstanceSpec:
    """The ``instance`` of an ``instance.create`` body."""
    spec = body.mapping("instance")
    kernel, initrd = spec.optional("kernel"), spec.optional("initrd")
    if initrd is not None and kernel is None:
        raise BadRequest("instance.initrd: an initrd needs a kernel")
    name = spec.text("name", 64)
    if not name:
        raise BadRequest("instance.name: must not be empty")
    return InstanceSpec(
        instance_id=spec.uuid("instance_id"), name=name,
        vcpus=spec.integer("vcpus", 1, 1024), memory_mb=spec.integer("memory_mb", 16, 1 << 24),
        disk_gb=spec.integer("disk_gb", 1, MAX_GB),
        image=spec.mapping("image").image_file(),
        kernel=kernel.image_file() if kernel is not None else None,
        initrd=initrd.image_file() if initrd is not None else None,
        ssh_keys=spec.strings("ssh_keys"), user_data=spec.text("user_data", MAX_USER_DATA),
        ports=tuple(port.port() for port in spec.items("ports")),
        volume_ids=tuple(volume.uuid("id") for volume in spec.items("volumes")),
    )
