"""Real guests through the whole stack: API -> frontend -> tree -> backend -> libvirt -> QEMU.

The tiny guest (``localcluster/guest.py``) reports on its serial console, which the test
reads through the API (``GET /v1/instances/{id}/console``): its hostname and SSH key
fingerprint from the NoCloud seed, and each disk that appears.  Checks of what is left on
the hypervisor use libvirt-python and the file system, never ``virsh``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from backend.compute import domain
from localcluster import LocalCluster, libvirtd
from localcluster import guest as tiny
from tests.support.cloudapi import admin_client, console, console_count, finished, offer_tiny, ok, running, until, upload
from tests.support.qcow2 import fake_qcow2

pytestmark = [pytest.mark.slow, pytest.mark.root]

CACHE = Path("/var/tmp/cloudland-guest")
TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0}
BOOT_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def guest(libvirt_daemons: None) -> tiny.Guest:
    return tiny.build(CACHE)


@pytest.fixture
def cluster(tmp_path: Path, guest: tiny.Guest) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", agents=0, backends=2, tree=TREE, ops_modules=["backend.compute"],
                     backend_config={"compute": {"domain_type": "qemu", "stop_timeout_s": 20.0,
                                                 "cmdline": tiny.CMDLINE}})
    try:
        with running(c):
            yield c
    finally:
        # Whatever the test left (a failed one may leave guests): no domain or pool outlives it.
        libvirtd.purge_under(c.workdir)


def _keypair(api: httpx.Client) -> tuple[str, str]:
    """A fresh ed25519 public key and the fingerprint OpenSSH prints for it."""
    blob = b"".join(len(p).to_bytes(4, "big") + p for p in (b"ssh-ed25519", os.urandom(32)))
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    key = ok(api.post("/v1/keypairs", json={"name": "ops", "public_key": "ssh-ed25519 "
                                              + base64.b64encode(blob).decode() + " ops@test"}), 201)
    assert key["fingerprint"] == fingerprint
    return key["name"], fingerprint


def test_an_instance_lives_its_whole_life_on_a_real_hypervisor(cluster: LocalCluster, guest: tiny.Guest) -> None:
    import libvirt

    api = offer_tiny(cluster, guest)
    ok(api.post("/v1/flavors", json={"name": "tiny2", "vcpus": 2, "memory_mb": 192, "disk_gb": 2}), 201)
    keypair, fingerprint = _keypair(api)

    user_data = "#!/bin/sh\necho USER-DATA-RAN-$((6 * 7))\n"
    accepted = ok(api.post("/v1/instances", json={"name": "vm1", "flavor": "tiny", "image": "tiny",
                                                   "keypair": keypair, "user_data": user_data}), 202)
    instance_id = accepted["resource"]["id"]
    finished(api, accepted)
    ready = until(lambda: console_count(api, "vm1", tiny.READY), BOOT_TIMEOUT, "the guest's READY line")
    assert ready == 1
    line = next(t for t in console(api, "vm1").splitlines() if t.startswith(tiny.READY))
    assert f"hostname=vm1 instance={instance_id} key={fingerprint}" in line, line
    until(lambda: console_count(api, "vm1", "USER-DATA-RAN-42"), 30, "the user data script's output")
    vm = ok(api.get("/v1/instances/vm1"))
    assert (vm["status"], vm["power_state"]) == ("active", "running")
    host = vm["hypervisor"]
    backend_dir = cluster.workdir / "backends" / host

    # The backend dies and comes back: the guest runs on, and the new backend drives it.
    cluster.kill(host)
    cluster.start_backend(host)
    until(lambda: ok(api.get(f"/v1/hypervisors/{host}"))["heartbeat_age_s"] is not None, 30, f"{host} back")

    # Power: stop gracefully (the guest's acpid powers it off), start, reboot.
    finished(api, ok(api.post("/v1/instances/vm1/stop", json={"timeout_s": 30}), 202))
    assert ok(api.get("/v1/instances/vm1"))["power_state"] == "shutoff"
    finished(api, ok(api.post("/v1/instances/vm1/start"), 202))
    until(lambda: console_count(api, "vm1", tiny.READY) >= 2, BOOT_TIMEOUT, "READY after start")
    finished(api, ok(api.post("/v1/instances/vm1/reboot"), 202))
    until(lambda: console_count(api, "vm1", tiny.READY) >= 3, BOOT_TIMEOUT, "READY after reboot")

    # A volume made for it is attached once made, live: the guest sees vdb appear.
    volume = ok(api.post("/v1/volumes", json={"name": "data", "size_gb": 1, "instance": "vm1"}), 202)
    finished(api, volume)
    until(lambda: console_count(api, "vm1", f"{tiny.BLOCK} vdb"), 60, "the guest to see vdb")
    finished(api, ok(api.post("/v1/volumes/data/detach"), 202))
    until(lambda: console_count(api, "vm1", f"{tiny.BLOCK_GONE} vdb"), 60, "the guest to lose vdb")

    # Cold resize to a bigger flavor: the host stops it, changes it and starts it again.
    finished(api, ok(api.post("/v1/instances/vm1/resize", json={"flavor": "tiny2"}), 202))
    vm = ok(api.get("/v1/instances/vm1"))
    assert (vm["vcpus"], vm["memory_mb"], vm["disk_gb"], vm["status"]) == (2, 192, 2, "active")
    conn = libvirt.open(libvirtd.URI)
    try:
        dom = conn.lookupByUUIDString(instance_id)
        assert dom.info()[3] == 2 and dom.info()[1] == 192 * 1024
        until(lambda: console_count(api, "vm1", tiny.READY) >= 4, BOOT_TIMEOUT, "READY after resize")

        # Pulled from under the cloud's feet: reconciliation reports it, and delete still cleans up.
        dom.destroy()
        dom.undefine()
        def vanished() -> list[dict[str, Any]]:
            events = ok(api.get("/v1/events", params={"kind": "drift.vanished"}))["items"]
            return [e for e in events if e["resource_id"] == instance_id]

        until(vanished, 30, "drift.vanished")
        assert ok(api.get("/v1/instances/vm1"))["power_state"] == "missing"

        # Delete: no domain, no files of its own; the volume is kept.
        finished(api, ok(api.delete("/v1/instances/vm1"), 202))
        assert api.get("/v1/instances/vm1").status_code == 404
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByUUIDString(instance_id)
    finally:
        conn.close()
    leftovers = [p for p in backend_dir.rglob("*") if instance_id in p.name]
    assert not leftovers, leftovers
    assert ok(api.get("/v1/volumes/data"))["status"] == "available"
    finished(api, ok(api.delete("/v1/volumes/data"), 202))
    assert not [p for p in backend_dir.rglob("*") if volume["resource"]["id"] in p.name]
    used = {h["name"]: h["used"] for h in ok(api.get("/v1/hypervisors"))["items"]}
    assert all(u == {"vcpus": 0, "memory_mb": 0, "disk_gb": 0} for u in used.values()), used


def test_a_launch_that_fails_everywhere_leaves_nothing_on_any_host(cluster: LocalCluster, guest: tiny.Guest) -> None:
    api = admin_client(cluster)
    until(lambda: len([h for h in ok(api.get("/v1/hypervisors"))["items"] if h["facts"]]) == 2, 60,
           "both hypervisors with capacity")
    broken = cluster.workdir / "broken.qcow2"
    # A qcow2 header the frontend accepts, and garbage after it: QEMU cannot open it.
    broken.write_bytes(fake_qcow2(length=32) + os.urandom(4064))
    upload(api, "broken", "qcow2", broken)
    ok(api.post("/v1/flavors", json={"name": "tiny", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}), 201)
    accepted = ok(api.post("/v1/instances", json={"name": "doomed", "flavor": "tiny", "image": "broken"}), 202)
    task_id = accepted["task"]["id"]
    task = until(lambda: (lambda t: t if t["status"] in ("succeeded", "failed") else None)(
        ok(api.get(f"/v1/tasks/{task_id}"))), 180, "the launch to end")
    assert task["status"] == "failed"
    assert all(name in task["error"] for name in cluster.backend_names), task["error"]
    instance_id = accepted["resource"]["id"]
    for name in cluster.backend_names:
        left = [p for p in (cluster.workdir / "backends" / name).rglob("*") if instance_id in p.name]
        assert not left, left
    assert re.search(r"error|broken|image|qcow2", task["error"], re.I)


def test_a_guest_that_panics_or_is_powered_behind_the_apis_back_is_shown_so_at_once(
        cluster: LocalCluster, guest: tiny.Guest) -> None:
    """libvirt's events, sent up the tree as notices: no reconcile round (every 60 s) needed."""
    import libvirt

    api = offer_tiny(cluster, guest)
    # /proc/sysrq-trigger's "c" crashes the kernel: it panics, and pvpanic tells the host.
    panicky = "#!/bin/sh\necho PANIC-NOW\necho c > /proc/sysrq-trigger\n"
    launches = [ok(api.post("/v1/instances", json={"name": "panicky", "flavor": "tiny", "image": "tiny",
                                                    "user_data": panicky}), 202),
                ok(api.post("/v1/instances", json={"name": "steady", "flavor": "tiny", "image": "tiny"}), 202)]
    for accepted in launches:
        finished(api, accepted)
    until(lambda: console_count(api, "panicky", "PANIC-NOW"), BOOT_TIMEOUT, "the guest about to panic")
    crashed = until(lambda: (lambda i: i if i["status"] == "crashed" else None)(
        ok(api.get("/v1/instances/panicky"))), 10, "panicky shown crashed")
    assert (crashed["power_state"], crashed["fault"]) == ("crashed", "crashed: its kernel panicked")
    events = ok(api.get("/v1/events", params={"kind": "instance.crashed"}))["items"]
    assert [e["resource_id"] for e in events] == [crashed["id"]]

    until(lambda: console_count(api, "steady", tiny.READY), BOOT_TIMEOUT, "steady's READY line")
    steady = ok(api.get("/v1/instances/steady"))
    conn = libvirt.open(libvirtd.URI)
    try:
        domain = conn.lookupByUUIDString(steady["id"])
        domain.shutdown()  # the ACPI button, pressed on the host: the guest's acpid powers it off
        until(lambda: ok(api.get("/v1/instances/steady"))["status"] == "stopped", 30, "steady shown stopped")
        domain.create()
        until(lambda: ok(api.get("/v1/instances/steady"))["status"] == "active", 10, "steady shown active")
    finally:
        conn.close()
    kinds = [e["kind"] for e in ok(api.get("/v1/events", params={"kind": "instance"}))["items"]
             if e["resource_id"] == steady["id"]]
    assert kinds == ["instance.running", "instance.shutoff"]

    finished(api, ok(api.delete("/v1/instances/panicky"), 202))  # a crashed instance goes like any other


WRITER = """#!/bin/sh
(
    while [ ! -b /dev/vdb ]; do sleep 0.2; done
    echo "SNAPSHOT-ME-$((6 * 7))" | dd of=/dev/vdb conv=fsync 2>/dev/null
    echo WROTE-VDB
    while [ ! -b /dev/vdc ]; do sleep 0.2; done
    echo "VDC-HOLDS $(head -c 14 /dev/vdc)"
) &
"""


def test_volumes_follow_their_instance_and_a_snapshot_holds_what_the_guest_wrote(cluster: LocalCluster,
                                                                                   guest: tiny.Guest) -> None:
    import libvirt

    api = offer_tiny(cluster, guest)
    ok(api.post("/v1/server-groups", json={"name": "apart", "policy": "anti-affinity"}), 201)
    for name, user_data in (("quiet", ""), ("writer", WRITER)):
        finished(api, ok(api.post("/v1/instances", json={"name": name, "flavor": "tiny", "image": "tiny",
                                                       "server_group": "apart", "user_data": user_data}), 202))
    hosts = {name: ok(api.get(f"/v1/instances/{name}"))["hypervisor"] for name in ("quiet", "writer")}
    assert len(set(hosts.values())) == 2
    for name in hosts:
        until(lambda: console_count(api, name, tiny.READY), BOOT_TIMEOUT, f"{name}'s READY line")

    # Volumes made without an instance are made where they are first attached, whichever host that is.
    for volume, instance in (("spare", "quiet"), ("data", "writer")):
        finished(api, ok(api.post("/v1/volumes", json={"name": volume, "size_gb": 1}), 202))
        assert ok(api.get(f"/v1/volumes/{volume}"))["hypervisor"] is None
        finished(api, ok(api.post(f"/v1/volumes/{volume}/attach", json={"instance": instance}), 202))
        shown = ok(api.get(f"/v1/volumes/{volume}"))
        assert shown["hypervisor"] == hosts[instance] and shown["attachment"]["instance"] == instance, shown
        until(lambda: console_count(api, instance, f"{tiny.BLOCK} vdb"), 60, f"{instance} to see vdb")
    until(lambda: console_count(api, "writer", "WROTE-VDB"), 60, "the guest's write to vdb")

    # A live snapshot: the tiny guest has no agent, so it is crash-consistent, and the guest is
    # back on its volume's own file afterwards.
    snapshot = ok(api.post("/v1/snapshots", json={"name": "snap", "volume": "data"}), 202)
    finished(api, snapshot)
    assert ok(api.get("/v1/snapshots/snap"))["consistency"] == "crash-consistent"
    data_id, writer_id = ok(api.get("/v1/volumes/data"))["id"], ok(api.get("/v1/instances/writer"))["id"]
    conn = libvirt.open(libvirtd.URI)
    try:
        dom = conn.lookupByUUIDString(writer_id)
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            sources = [d.path.name for d in domain.parse(dom.XMLDesc(flags)).disks]
            assert f"vol-{data_id}.qcow2" in sources and not [s for s in sources if s.startswith("snapshot-")]
    finally:
        conn.close()
    backend_dir = cluster.workdir / "backends" / hosts["writer"]
    assert not [p for p in backend_dir.rglob("snapshot-*")]

    # A volume from the snapshot holds what the guest wrote before it.
    finished(api, ok(api.post("/v1/volumes", json={"name": "copy", "snapshot": "snap", "instance": "writer"}), 202))
    assert ok(api.get("/v1/volumes/copy"))["status"] == "in-use"
    until(lambda: console_count(api, "writer", "VDC-HOLDS SNAPSHOT-ME-42"), 60, "the guest to read the copy")

    for instance in ("quiet", "writer"):
        finished(api, ok(api.delete(f"/v1/instances/{instance}"), 202))
    for volume in ("spare", "data", "copy"):
        finished(api, ok(api.delete(f"/v1/volumes/{volume}"), 202))
    finished(api, ok(api.delete("/v1/snapshots/snap"), 202))
    assert not [p for p in (cluster.workdir / "backends").rglob("*.qcow2") if p.name.startswith(("vol-", "snap-"))]
    used = {h["name"]: h["used"] for h in ok(api.get("/v1/hypervisors"))["items"]}
    assert all(u == {"vcpus": 0, "memory_mb": 0, "disk_gb": 0} for u in used.values()), used


# The tiny guest runs from its initramfs and has no file system on its disk: it writes the marker
# straight onto the start of vda, which is what an image of the disk must carry.
WRITE_MARKER = """#!/bin/sh
echo "IMAGE-ME-$((6 * 7))" | dd of=/dev/vda conv=fsync 2>/dev/null
echo WROTE-VDA
"""
READ_MARKER = """#!/bin/sh
echo "VDA-HOLDS $(head -c 11 /dev/vda)"
"""


def test_an_image_of_a_stopped_instance_boots_on_another_hypervisor_with_what_its_guest_wrote(
        cluster: LocalCluster, guest: tiny.Guest) -> None:
    api = offer_tiny(cluster, guest)
    ok(api.post("/v1/server-groups", json={"name": "apart", "policy": "anti-affinity"}), 201)
    finished(api, ok(api.post("/v1/instances", json={"name": "origin", "flavor": "tiny", "image": "tiny",
                                                   "server_group": "apart", "user_data": WRITE_MARKER}), 202))
    until(lambda: console_count(api, "origin", "WROTE-VDA"), BOOT_TIMEOUT, "the guest's write to its disk")

    refused = api.post("/v1/instances/origin/image", json={"name": "origin-img"})
    assert refused.status_code == 409 and "stop the instance first" in refused.json()["error"]["reason"], refused.text
    finished(api, ok(api.post("/v1/instances/origin/stop", json={"timeout_s": 30}), 202))
    origin = ok(api.get("/v1/instances/origin"))
    made = ok(api.post("/v1/instances/origin/image", json={"name": "origin-img"}), 202)
    finished(api, made, timeout=600)
    image = ok(api.get("/v1/images/origin-img"))
    assert (image["status"], image["source_instance_id"], image["virtual_size_bytes"], image["min_disk_gb"]) == (
        "active", origin["id"], 1 << 30, 1), image
    assert ok(api.get("/v1/instances/origin"))["status"] == "stopped"
    # The flattened copy was sent and removed; the frontend's file is a self-contained qcow2.
    assert not list((cluster.workdir / "backends" / origin["hypervisor"]).rglob(f"image-{image['id']}*"))
    stored = (cluster.workdir / "frontend" / "images" / image["id"]).read_bytes()[:16]
    assert stored[:4] == b"QFI\xfb" and stored[8:16] == bytes(8), "a backing file in the stored image"

    finished(api, ok(api.post("/v1/instances", json={"name": "copy", "flavor": "tiny", "image": "origin-img",
                                                   "server_group": "apart", "user_data": READ_MARKER}), 202))
    assert ok(api.get("/v1/instances/copy"))["hypervisor"] != origin["hypervisor"]
    until(lambda: console_count(api, "copy", "VDA-HOLDS IMAGE-ME-42"), BOOT_TIMEOUT, "the copy to read the marker")

    for instance in ("origin", "copy"):
        finished(api, ok(api.delete(f"/v1/instances/{instance}"), 202))
    assert api.delete("/v1/images/origin-img").status_code == 204
