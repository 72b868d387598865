"""The ops the frontend sends to hypervisors through the tree, and the bodies it builds for them.

``docs/ops.md`` is the contract for driver authors: each op's body and payload, and the
rules every host-changing op follows (idempotent, all or nothing, errors that say why).
"""

from __future__ import annotations

from typing import Any

from .db.models import Image, Instance, Keypair, Port, Volume
from .imagelinks import ImageLinks

__all__ = ["CONSOLE_CLOSE", "CONSOLE_OPEN", "CONSOLE_WRITE", "COPY_TIMEOUT", "HOST_OP_TIMEOUT", "instance_spec", "INSTANCE_CONSOLE", "INSTANCE_CREATE", "INSTANCE_DELETE", "INSTANCE_IMAGE", "INSTANCE_RESIZE", "INVENTORY", "POWER_OPS",
           "SNAPSHOT_DELETE", "VOLUME_ATTACH", "VOLUME_CREATE", "VOLUME_DELETE", "VOLUME_DETACH", "VOLUME_SNAPSHOT"]

#: seconds a host may take for an op on an instance or a volume (launches have their own, configured)
HOST_OP_TIMEOUT = 300.0
#: seconds a host may take to copy a volume (a snapshot, a volume from one): it copies every byte
COPY_TIMEOUT = 3600.0

INSTANCE_CREATE = "instance.create"
INSTANCE_DELETE = "instance.delete"
INSTANCE_RESIZE = "instance.resize"
INSTANCE_CONSOLE = "instance.console"
INSTANCE_IMAGE = "instance.image"
#: a live console session on the instance's host (``frontend/liveconsole.py``)
CONSOLE_OPEN = "console.open"
CONSOLE_WRITE = "console.write"
CONSOLE_CLOSE = "console.close"
#: action -> op; each answers the power state the instance ends in
POWER_OPS = {"start": "instance.start", "stop": "instance.stop", "reboot": "instance.reboot"}
VOLUME_CREATE = "volume.create"
VOLUME_DELETE = "volume.delete"
VOLUME_ATTACH = "volume.attach"
VOLUME_DETACH = "volume.detach"
VOLUME_SNAPSHOT = "volume.snapshot"
SNAPSHOT_DELETE = "snapshot.delete"
INVENTORY = "compute.inventory"


def _file(image: Image | None, links: ImageLinks) -> dict[str, Any] | None:
    if image is None:
        return None
    return {"id": image.id, "format": image.format, "checksum": image.checksum, "size_bytes": image.size_bytes,
            "url": links.url(image.id)}


def instance_spec(instance: Instance, image: Image, kernel: Image | None, initrd: Image | None,
                  keypair: Keypair | None, ports: list[Port], volumes: list[Volume],
                  links: ImageLinks) -> dict[str, Any]:
    """Everything a hypervisor needs to build the instance, without asking anyone (but for the
    image files, which it fetches from the frontend over signed links)."""
    return {
        "instance_id": instance.id,
        "name": instance.name,
        "vcpus": instance.vcpus,
        "memory_mb": instance.memory_mb,
        "disk_gb": instance.disk_gb,
        "image": _file(image, links),
        "kernel": _file(kernel, links),
        "initrd": _file(initrd, links),
        "ssh_keys": [keypair.public_key] if keypair else [],
        "user_data": instance.user_data or "",
        "ports": [{"id": p.id, "mac": p.mac_address, "ip": p.ip_address, "subnet_id": p.subnet_id,
                   "network_id": p.network_id} for p in ports],
        "volumes": [{"id": v.id, "size_gb": v.size_gb} for v in volumes],
    }
