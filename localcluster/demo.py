"""What a fresh local cloud offers to launch at once: the tiny guest as public images, a flavor for
it, and, on namespace hypervisors, a network to put it on (with a router to the lab's outside)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import httpx

from . import LocalCluster
from .guest import Guest

__all__ = ["EXTERNAL", "FLAVOR", "IMAGE", "NETWORK", "offer_network", "offer_tiny_guest"]

IMAGE = "tiny"
FLAVOR = "tiny"
NETWORK = "demo-net"
EXTERNAL = "public"
#: the host numbers, first and last, of the external network's pool: floating IPs must never take the
#: addresses the lab gives its outside router (.1) and its hypervisors' external bridges (.11, .12, ...)
EXTERNAL_POOL = (100, 250)


def _admin(cluster: LocalCluster) -> httpx.Client:
    verify = cluster.ssl_context()
    token = httpx.post(f"{cluster.api_url}/v1/tokens", timeout=30, verify=verify,
                       json={"username": "admin", "password": cluster.admin_password()}).raise_for_status().json()
    return httpx.Client(base_url=cluster.api_url, headers={"Authorization": f"Bearer {token['token']}"},
                        timeout=120, verify=verify)


def offer_network(cluster: LocalCluster) -> None:
    """On a lab's hypervisors: the lab's external network as ``public`` (floating IPs), and the admin's
    ``demo-net`` (10.0.0.0/24) with a router that SNATs to it, unless present."""
    assert cluster.lab is not None
    external = cluster.lab.external_net
    with _admin(cluster) as api:
        if api.get(f"/v1/networks/{EXTERNAL}").status_code == 404:
            api.post("/v1/networks", json={"name": EXTERNAL, "external": True}).raise_for_status()
            cidr = ipaddress.IPv4Network(external["cidr"])
            pool = {"start": str(cidr[EXTERNAL_POOL[0]]), "end": str(cidr[EXTERNAL_POOL[1]])}
            api.post("/v1/subnets", json={"name": f"{EXTERNAL}-v4", "network": EXTERNAL, "cidr": external["cidr"],
                                          "gateway": external["gateway"], "dhcp": False,
                                          "allocation_pools": [pool]}).raise_for_status()
        if api.get(f"/v1/networks/{NETWORK}").status_code == 404:
            api.post("/v1/networks", json={"name": NETWORK}).raise_for_status()
            api.post("/v1/subnets", json={"name": f"{NETWORK}-v4", "network": NETWORK, "cidr": "10.0.0.0/24"}
                     ).raise_for_status()
            api.post("/v1/routers", json={"name": f"{NETWORK}-router", "network": NETWORK, "snat": True}
                     ).raise_for_status()


def offer_tiny_guest(cluster: LocalCluster, guest: Guest) -> None:
    """Upload the guest (kernel, initrd, root disk) as public images and add a flavor, unless present."""
    with _admin(cluster) as api:
        names = {i["name"] for i in api.get("/v1/images").raise_for_status().json()["items"]}
        if IMAGE not in names:
            kernel = _upload(api, f"{IMAGE}-kernel", "raw", guest.kernel)
            initrd = _upload(api, f"{IMAGE}-initrd", "raw", guest.initrd)
            _upload(api, IMAGE, "qcow2", guest.disk, kernel=kernel, initrd=initrd)
        if api.get(f"/v1/flavors/{FLAVOR}").status_code == 404:
            api.post("/v1/flavors", json={"name": FLAVOR, "vcpus": 1, "memory_mb": 128, "disk_gb": 1}
                     ).raise_for_status()


def _upload(api: httpx.Client, name: str, fmt: str, path: Path, **refs: str) -> str:
    image = api.post("/v1/images", json={"name": name, "format": fmt, "public": True, **refs}).raise_for_status()
    image_id = str(image.json()["id"])
    with path.open("rb") as f:
        api.put(f"/v1/images/{image_id}/file", content=f).raise_for_status()
    return image_id
