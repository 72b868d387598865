"""The ops the frontend sends to hypervisors through the tree, and the bodies it builds for them.

``docs/ops.md`` is the contract for driver authors: each op's body and payload, and the
rules every host-changing op follows (idempotent, all or nothing, errors that say why).
"""

from __future__ import annotations

from typing import Any

from .db.models import Image, Instance, Keypair, Port, Volume

__all__ = ["instance_spec", "INSTANCE_CREATE", "INSTANCE_DELETE", "INSTANCE_RESIZE", "INVENTORY", "POWER_OPS",
           "VOLUME_ATTACH", "VOLUME_CREATE", "VOLUME_DELETE", "VOLUME_DETACH"]

INSTANCE_CREATE = "instance.create"
INSTANCE_DELETE = "instance.delete"
INSTANCE_RESIZE = "instance.resize"
#: action -> op; each answers the power state the instance ends in
POWER_OPS = {"start": "instance.start", "stop": "instance.stop", "reboot": "instance.reboot"}
VOLUME_CREATE = "volume.create"
VOLUME_DELETE = "volume.delete"
VOLUME_ATTACH = "volume.attach"
VOLUME_DETACH = "volume.detach"
INVENTORY = "compute.inventory"


def instance_spec(instance: Instance, image: Image, keypair: Keypair | None, ports: list[Port],
                  volumes: list[Volume]) -> dict[str, Any]:
    """Everything a hypervisor needs to build the instance, without asking anyone."""
    return {
        "instance_id": instance.id,
        "name": instance.name,
        "vcpus": instance.vcpus,
        "memory_mb": instance.memory_mb,
        "disk_gb": instance.disk_gb,
        "image": {"id": image.id, "format": image.format, "checksum": image.checksum, "size_bytes": image.size_bytes,
                  "kernel_id": image.kernel_id, "initrd_id": image.initrd_id},
        "ssh_keys": [keypair.public_key] if keypair else [],
        "user_data": instance.user_data or "",
        "ports": [{"id": p.id, "mac": p.mac_address, "ip": p.ip_address, "subnet_id": p.subnet_id,
                   "network_id": p.network_id} for p in ports],
        "volumes": [{"id": v.id, "size_gb": v.size_gb} for v in volumes],
    }
