"""The names and MAC addresses the driver gives what it builds: derived, never stored.

Every device the driver owns has a name of one of the shapes below (``cl`` and a letter, then
the subnet's VNI), so a restarted backend tells its own devices from anyone else's by the name
alone, and nothing a user typed ever reaches a device name.  Linux interface names hold 15
characters: ``clb`` + a VNI of at most 8 digits fits.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["EXTERNAL_LEG", "OWNED", "OWNED_PER_NETWORK", "TRANSIT_LEG", "bridge", "external_leg", "gateway_leg",
           "gateway_mac", "router_leg", "router_namespace", "transit_leg", "vni_of", "vxlan"]

#: the device names of this driver in a hypervisor's namespace, per subnet (by VNI)...
OWNED = re.compile(r"cl[bxg](\d{1,8})\Z")
#: ...and per network (by the first 11 hex digits of its id)
OWNED_PER_NETWORK = re.compile(r"cl[te]([0-9a-f]{11})\Z")
#: the router namespace's ends of its transit and external veths (names are per namespace)
TRANSIT_LEG, EXTERNAL_LEG = "qx", "fx"


def bridge(vni: int) -> str:
    return f"clb{vni}"


def vxlan(vni: int) -> str:
    return f"clx{vni}"


def gateway_leg(vni: int) -> str:
    """The host's end of the veth that joins a subnet's bridge to its router namespace."""
    return f"clg{vni}"


def router_leg(vni: int) -> str:
    """The router namespace's end, holding the subnet's gateway address (names are per namespace)."""
    return f"sn{vni}"


def transit_leg(network_id: str) -> str:
    """The host's end of the veth that carries a router's SNATed egress to the host."""
    return "clt" + network_id.replace("-", "")[:11]


def external_leg(network_id: str) -> str:
    """The host's end of the veth that joins a router's floating IPs to the external network."""
    return "cle" + network_id.replace("-", "")[:11]


def vni_of(name: str) -> int | None:
    match = OWNED.match(name)
    return int(match.group(1)) if match else None


def router_namespace(prefix: str, network_id: str) -> str:
    return f"{prefix}router-{network_id}"


def gateway_mac(host: str, subnet_id: str) -> str:
    """A subnet's gateway MAC on one host: the same gateway IP on every host, a MAC of its own on
    each, so that no two hosts ever answer for the same MAC.  Locally administered, unicast."""
    digest = hashlib.sha256(f"{host}/{subnet_id}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])
