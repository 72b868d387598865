"""How a port's device is named on its hypervisor: shared by the compute driver, which asks
libvirt for the tap, and the network driver, which plugs it into its subnet's bridge."""

from __future__ import annotations

__all__ = ["tap_name"]

#: Linux interface names hold 15 characters: "tap" and 11 of the port id fit with room to spare
_TAP_ID_CHARS = 11


def tap_name(port_id: str) -> str:
    return "tap" + port_id[:_TAP_ID_CHARS]
