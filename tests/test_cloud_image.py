"""A stock Debian cloud image, booted through the API, is configured by cloud-init.

The image (``localcluster/cloudimage.py``) holds what Debian's own cloud image holds: the
cloud kernel (no AHCI driver: a seed on a SATA CD-ROM goes unseen), cloud-init, openssh-server
and growpart.  Built once from Debian's packages and cached in ``CACHE``.  Everything is read
on the instance's serial console, through the API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from localcluster import LocalCluster, cloudimage, libvirtd
from tests.support.cloudapi import admin_client, ok, running, until

#: one boot may take its whole BOOT_TIMEOUT on a busy machine, past the suite's 300 s default
pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(600)]

TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0}
#: a TCG boot of the cloud image to cloud-init's end takes 40-60 s on an idle 2-core machine
BOOT_TIMEOUT = 420.0
FLAVOR_DISK_GB = 3
MARKER = "CLOUDLAND-RUNCMD"


@pytest.fixture
def cluster(tmp_path: Path, cloud_image: cloudimage.CloudImage) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", agents=0, backends=1, tree=TREE, ops_modules=["backend.compute"],
                     backend_config={"compute": {"domain_type": "qemu", "stop_timeout_s": 30.0}})
    try:
        with running(c):
            yield c
    finally:
        libvirtd.purge_under(c.workdir)


def _console(api: httpx.Client, instance: str) -> str:
    return str(ok(api.get(f"/v1/instances/{instance}/console", params={"bytes": 1 << 20}))["log"])


def test_a_stock_debian_cloud_image_is_configured_by_cloud_init(cluster: LocalCluster,
                                                                 cloud_image: cloudimage.CloudImage) -> None:
    api = admin_client(cluster)
    until(lambda: any(h["facts"] for h in ok(api.get("/v1/hypervisors"))["items"]), 60, "a hypervisor with capacity")
    uploaded = ok(api.post("/v1/images", json={"name": "debian-12", "format": "qcow2"}), 201)
    with cloud_image.path.open("rb") as f:
        ok(api.put(f"/v1/images/{uploaded['id']}/file", content=f))
    ok(api.post("/v1/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 512, "disk_gb": FLAVOR_DISK_GB}), 201)
    blob = b"".join(len(p).to_bytes(4, "big") + p for p in (b"ssh-ed25519", os.urandom(32)))
    key_b64 = base64.b64encode(blob).decode()
    ok(api.post("/v1/keypairs", json={"name": "ops", "public_key": f"ssh-ed25519 {key_b64} ops@test"}), 201)

    # The marker proves runcmd ran; it also reports what cloud-init did to the default user
    # and the disk, as the guest itself sees them.
    user_data = "#cloud-config\n" + json.dumps({"runcmd": [[
        "sh", "-c",
        f"echo {MARKER} host=$(hostname) user=$(id -un {cloud_image.default_user}) "
        f"key=$(cut -d' ' -f2 /home/{cloud_image.default_user}/.ssh/authorized_keys) "
        "root_mb=$(df -BM --output=size / | tail -n 1 | tr -dc 0-9)"]]})
    accepted = ok(api.post("/v1/instances", json={"name": "deb_1", "flavor": "small", "image": "debian-12",
                                                   "keypair": "ops", "user_data": user_data}), 202)
    task_id = accepted["task"]["id"]
    task = until(lambda: (lambda t: t if t["status"] in ("succeeded", "failed") else None)(
        ok(api.get(f"/v1/tasks/{task_id}"))), 300, f"task {task_id}")
    assert task["status"] == "succeeded", json.dumps(task, indent=1)[-3000:]

    finished = re.compile(r"Cloud-init v\. \S+ finished .* Datasource DataSourceNoCloud \[seed=/dev/sr0\]")
    log = until(lambda: (lambda text: text if finished.search(text) else None)(_console(api, "deb_1")),
                BOOT_TIMEOUT, "cloud-init to finish from the NoCloud seed")
    # cloud-init's hostname is the instance's name made a valid hostname (no '_')
    marker = re.search(rf"{MARKER} host=(\S+) user=(\S+) key=(\S+) root_mb=(\d+)", log)
    assert marker is not None, log[-4000:]
    assert marker.group(1) == "deb-1" and marker.group(2) == cloud_image.default_user
    assert marker.group(3) == key_b64
    # growpart took the root file system from the image's size to the flavor's disk
    assert int(marker.group(4)) > (FLAVOR_DISK_GB - 1) * 1024 > cloud_image.virtual_size >> 20
    assert re.search(r"^deb-1 login:", log, re.MULTILINE), log[-4000:]
    # cloud-init's own report of the key it installed, by its sha256 fingerprint
    fingerprint = ":".join(f"{b:02x}" for b in hashlib.sha256(blob).digest())
    assert re.search(rf"Authorized keys from /home/{cloud_image.default_user}/.ssh/authorized_keys", log)
    assert fingerprint in log
    vm = ok(api.get("/v1/instances/deb_1"))
    assert (vm["status"], vm["power_state"]) == ("active", "running")

    ok(api.delete("/v1/instances/deb_1"), 202)
