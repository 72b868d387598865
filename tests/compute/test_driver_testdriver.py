"""The driver's logic on libvirt's ``test:///default``: an in-process hypervisor, no QEMU.

Each test's connections are closed at its end, and the test driver then forgets everything,
so every test starts from its stock state (one unrelated running domain, "test").

What the test driver cannot do, and so is covered by the real-guest tests on qemu:///system:
- it creates no files (pools and volumes live in memory): the overlay's real backing file,
  a booting guest, its serial console log and its VNC port;
- virStorageVolResize: growing the root disk on resize (here: resize at the same disk size,
  and a grow that fails must still restart the instance);
- virDomainAttachDeviceFlags/DetachDeviceFlags: live (and config) attach and detach of a
  volume (here: the paths that need no such call: replays, refusals, volumes attached at create);
- a guest that ignores ACPI: its shutdown is instant here (forced power-off is simulated);
- disk-only snapshots and block commits: a live volume snapshot (here: that its failure leaves
  no copy behind and the guest on its volume; copies of volumes no running guest uses).
"""

from __future__ import annotations

import gc
import queue
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator
from xml.etree import ElementTree as ET

import libvirt
import pytest

from backend.compute import domain, register
from backend.compute.driver import (
    ComputeDriver,
    Consistency,
    DriverSettings,
    PowerState,
    overlay_name,
    power_notice,
    snapshot_name,
    volume_name,
)
from backend.compute.exceptions import (
    BadRequest,
    ComputeError,
    Conflict,
    HypervisorError,
    NotFound,
    Unsupported,
)
from backend.compute.domainevents import DomainChange, DomainEvents, change_of
from backend.compute.hypervisor import DomainState, Hypervisor, pool_name, state_of
from backend.compute.imagecache import ImageCache
from backend.compute.spec import ImageFile, InstanceSpec, PortSpec
from backend.registry import OpRegistry
from sci import Result, Status
from service.config import BackendConfig, ComputeSection
from tests.support.qcow2 import fake_qcow2

URI = "test:///default"
HOST = "hv-test"
POOL = pool_name(HOST)
GIB = 1 << 30
IMAGE = ImageFile(id="0e6f1b1a-3c1d-4b7e-9a55-2f0c9d1e8b7a", format="qcow2", checksum="0" * 64,
                  url="http://127.0.0.1:9/never-fetched")


@pytest.fixture
def libvirt_conn() -> Iterator[Any]:
    """A connection of the test's own, to look behind the driver's back."""
    conn = libvirt.open(URI)
    yield conn
    conn.close()
    # Domains and volumes caught in a test's exception tracebacks (reference cycles) hold
    # their connection: collected, the last connection closes and the test driver resets.
    gc.collect()


@pytest.fixture
def hv(tmp_path: Path, libvirt_conn: Any) -> Iterator[Hypervisor]:
    hypervisor = Hypervisor(URI, tmp_path / "pool", HOST)
    yield hypervisor
    hypervisor.close()


@pytest.fixture
def images(tmp_path: Path) -> Iterator[ImageCache]:
    cache = ImageCache(tmp_path / "images")
    # Already cached: the driver must not download it (its URL leads nowhere).
    cache.path(IMAGE.id).write_bytes(fake_qcow2(virtual_size=2 * GIB, length=32))
    yield cache
    cache.close()


@pytest.fixture
def driver(tmp_path: Path, hv: Hypervisor, images: ImageCache) -> ComputeDriver:
    return ComputeDriver(hv, images, DriverSettings(
        instances_dir=tmp_path / "instances", domain_type="qemu", stop_timeout_s=0.2, reboot_timeout_s=0.1,
        shutdown_retry_s=0.02, poll_interval_s=0.01, detach_timeout_s=0.1))


def new_spec(**changes: Any) -> InstanceSpec:
    return replace(InstanceSpec(
        instance_id=str(uuid.uuid4()), name="web_1", vcpus=1, memory_mb=256, disk_gb=2, image=IMAGE,
        kernel=None, initrd=None, ssh_keys=("ssh-ed25519 AAAA alice",), user_data="",
        ports=(PortSpec(str(uuid.uuid4()), "52:54:00:00:00:01"),), volume_ids=()), **changes)


def leftovers(driver: ComputeDriver, hv: Hypervisor, conn: Any, instance_id: str) -> list[str]:
    """Every piece of the instance still on the host."""
    found = []
    if hv.state(instance_id) is not None:
        found.append("domain")
    if hv.volume(overlay_name(instance_id)) is not None:
        found.append("overlay")
    if driver.instance_dir(instance_id).exists():
        found.append(f"files {sorted(p.name for p in driver.instance_dir(instance_id).iterdir())}")
    return found


def test_create_builds_every_piece(driver: ComputeDriver, hv: Hypervisor, libvirt_conn: Any) -> None:
    spec = new_spec()
    assert driver.create(spec) is PowerState.RUNNING
    assert hv.state(spec.instance_id) is DomainState.RUNNING
    root = ET.fromstring(hv.xml(spec.instance_id))
    assert root.findtext("title") == "web_1" and root.findtext("uuid") == spec.instance_id
    assert root.get("type") == "qemu"
    info = domain.parse(hv.xml(spec.instance_id))
    overlay = hv.volume(overlay_name(spec.instance_id))
    assert overlay is not None and overlay.capacity_bytes == 2 * GIB
    seed = driver.instance_dir(spec.instance_id) / "seed.iso"
    assert [(d.target, d.path, d.cdrom) for d in info.disks] == [("vda", overlay.path, False), ("sda", seed, True)]
    assert seed.read_bytes()[0x8000:0x8006] == b"\x01CD001"  # an ISO 9660 volume descriptor
    assert info.console_log == driver.instance_dir(spec.instance_id) / "console.log"
    assert root.find("devices/interface/target").get("dev") == domain.tap_name(spec.ports[0].id)
    # The overlay reads through to the cached image.
    volume_xml = ET.fromstring(libvirt_conn.storagePoolLookupByName(POOL)
                               .storageVolLookupByName(overlay_name(spec.instance_id)).XMLDesc(0))
    assert volume_xml.findtext("backingStore/path") == str(driver._images.path(IMAGE.id))
    assert volume_xml.find("target/format").get("type") == "qcow2"


def test_a_disk_smaller_than_its_image_is_refused_before_anything_is_made(
        driver: ComputeDriver, hv: Hypervisor, images: ImageCache, libvirt_conn: Any) -> None:
    spec = new_spec(disk_gb=1)  # the cached image's virtual size is 2 GiB
    with pytest.raises(ComputeError, match=f"a disk of 1 GB is smaller than image {IMAGE.id}, whose virtual size "
                                           f"is {2 * GIB} bytes") as caught:
        driver.create(spec)
    assert caught.value.exit_status == 64
    assert leftovers(driver, hv, libvirt_conn, spec.instance_id) == []
    # A raw image is as large as its file.
    raw = ImageFile(str(uuid.uuid4()), "raw", "3" * 64, "http://127.0.0.1:9/never")
    images.path(raw.id).write_bytes(b"\0" * 1000)
    assert images.virtual_size(raw.id, "raw") == 1000
    assert driver.create(new_spec(disk_gb=1, image=raw)) is PowerState.RUNNING


def test_inventory_reports_ours_only(driver: ComputeDriver, hv: Hypervisor) -> None:
    assert hv.state("test") is DomainState.RUNNING  # the test driver's own domain: not ours
    assert driver.inventory() == {}
    first, second = new_spec(), new_spec()
    driver.create(first)
    driver.create(second)
    driver.stop(second.instance_id)
    assert driver.inventory() == {first.instance_id: PowerState.RUNNING, second.instance_id: PowerState.SHUTOFF}


def test_kernel_boot(driver: ComputeDriver, hv: Hypervisor, images: ImageCache) -> None:
    kernel = ImageFile(str(uuid.uuid4()), "raw", "1" * 64, "http://127.0.0.1:9/never")
    initrd = ImageFile(str(uuid.uuid4()), "raw", "2" * 64, "http://127.0.0.1:9/never")
    for file in (kernel, initrd):
        images.path(file.id).write_bytes(b"boot file")
    spec = new_spec(kernel=kernel, initrd=initrd)
    driver.create(spec)
    root = ET.fromstring(hv.xml(spec.instance_id))
    assert root.findtext("os/kernel") == str(images.path(kernel.id))
    assert root.findtext("os/initrd") == str(images.path(initrd.id))
    assert root.findtext("os/cmdline") == "console=ttyS0 no_timer_check"
    # What keeps them in the image cache: the domain names them.
    assert {images.path(kernel.id), images.path(initrd.id)} <= hv.files_in_use()


def test_stop_start_reboot(driver: ComputeDriver, hv: Hypervisor) -> None:
    spec = new_spec()
    driver.create(spec)
    assert driver.stop(spec.instance_id) is PowerState.SHUTOFF
    assert hv.state(spec.instance_id) is DomainState.SHUTOFF
    assert driver.stop(spec.instance_id) is PowerState.SHUTOFF  # again: nothing to do
    assert driver.start(spec.instance_id) is PowerState.RUNNING
    assert driver.start(spec.instance_id) is PowerState.RUNNING
    assert driver.reboot(spec.instance_id) is PowerState.RUNNING
    driver.stop(spec.instance_id)
    assert driver.reboot(spec.instance_id) is PowerState.RUNNING  # a shut off instance comes up


def test_stop_powers_off_a_guest_that_ignores_acpi(driver: ComputeDriver, hv: Hypervisor,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = new_spec()
    driver.create(spec)
    powered_off, presses = [], []
    monkeypatch.setattr(hv, "shutdown", presses.append)  # the guest never reacts
    real_destroy = hv.destroy
    monkeypatch.setattr(hv, "destroy", lambda name: (powered_off.append(name), real_destroy(name)))
    assert driver.stop(spec.instance_id, timeout_s=0.1) is PowerState.SHUTOFF
    assert powered_off == [spec.instance_id]
    assert len(presses) >= 3  # the button is pressed again while the guest may still be booting
    driver.start(spec.instance_id)
    assert driver.reboot(spec.instance_id) is PowerState.RUNNING
    assert powered_off == [spec.instance_id] * 2


def test_a_second_press_stops_a_guest_that_missed_the_first(driver: ComputeDriver, hv: Hypervisor,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    spec = new_spec()
    driver.create(spec)
    presses: list[str] = []
    real_shutdown = hv.shutdown
    monkeypatch.setattr(hv, "shutdown", lambda name: presses.append(name) if not presses else real_shutdown(name))
    monkeypatch.setattr(hv, "destroy", lambda name: pytest.fail("powered off"))
    assert driver.stop(spec.instance_id, timeout_s=5) is PowerState.SHUTOFF
    assert presses == [spec.instance_id]


def test_a_paused_instance_is_resumed_by_start(driver: ComputeDriver, hv: Hypervisor, libvirt_conn: Any) -> None:
    spec = new_spec()
    driver.create(spec)
    libvirt_conn.lookupByName(spec.instance_id).suspend()
    assert driver.inventory() == {spec.instance_id: PowerState.PAUSED}
    assert driver.start(spec.instance_id) is PowerState.RUNNING
    assert hv.state(spec.instance_id) is DomainState.RUNNING


def test_resize(driver: ComputeDriver, hv: Hypervisor) -> None:
    spec = new_spec()
    driver.create(spec)
    assert driver.resize(spec.instance_id, vcpus=2, memory_mb=1024, disk_gb=2) is PowerState.RUNNING
    root = ET.fromstring(hv.xml(spec.instance_id))
    assert root.findtext("vcpu") == "2"
    assert root.findtext("memory") == str(1024 << 10)  # libvirt answers in KiB
    driver.stop(spec.instance_id)
    assert driver.resize(spec.instance_id, vcpus=1, memory_mb=512, disk_gb=2) is PowerState.SHUTOFF


def test_resize_refuses_to_shrink_before_touching_anything(driver: ComputeDriver, hv: Hypervisor) -> None:
    spec = new_spec(disk_gb=3)
    driver.create(spec)
    with pytest.raises(BadRequest, match="a disk only grows; it has 3 GB, 2 GB asked") as caught:
        driver.resize(spec.instance_id, vcpus=2, memory_mb=512, disk_gb=2)
    assert caught.value.exit_status == 64
    assert hv.state(spec.instance_id) is DomainState.RUNNING
    assert ET.fromstring(hv.xml(spec.instance_id)).findtext("vcpu") == "1"


def test_a_failed_resize_restarts_the_instance_at_its_old_size(driver: ComputeDriver, hv: Hypervisor) -> None:
    """Growing the disk needs virStorageVolResize, which the test driver lacks: the failure path."""
    spec = new_spec()
    driver.create(spec)
    with pytest.raises(Unsupported, match="resize volume"):
        driver.resize(spec.instance_id, vcpus=2, memory_mb=512, disk_gb=4)
    assert hv.state(spec.instance_id) is DomainState.RUNNING
    assert ET.fromstring(hv.xml(spec.instance_id)).findtext("vcpu") == "1"  # all or nothing: the old size


def test_delete_leaves_nothing_and_is_idempotent(driver: ComputeDriver, hv: Hypervisor, libvirt_conn: Any) -> None:
    spec = new_spec()
    driver.create(spec)
    (driver.instance_dir(spec.instance_id) / "console.log").write_text("boot\n")
    driver.delete(spec.instance_id)
    assert leftovers(driver, hv, libvirt_conn, spec.instance_id) == []
    assert driver.inventory() == {}
    driver.delete(spec.instance_id)  # absent: success
    driver.delete(str(uuid.uuid4()))  # never existed: success too
    with pytest.raises(NotFound, match="is not on this host"):
        driver.start(spec.instance_id)


def test_create_converges_on_an_existing_instance(driver: ComputeDriver, hv: Hypervisor) -> None:
    spec = new_spec()
    assert driver.create(spec) is PowerState.RUNNING
    assert driver.create(spec) is PowerState.RUNNING
    driver.stop(spec.instance_id)
    assert driver.create(spec) is PowerState.RUNNING  # asked to exist and run: started
    assert list(driver.inventory()) == [spec.instance_id]


def test_domains_not_made_by_cloudland_are_left_alone(driver: ComputeDriver, hv: Hypervisor,
                                                      libvirt_conn: Any) -> None:
    spec = new_spec()
    root = ET.fromstring(domain.build(domain.DomainSpec(spec.instance_id, "hv-test", "theirs", 1, 64, "qemu", (), (),
                                                        Path("/x.log"))))
    root.remove(root.find("metadata"))
    libvirt_conn.defineXML(ET.tostring(root, encoding="unicode"))
    for call in (lambda: driver.create(spec), lambda: driver.delete(spec.instance_id),
                 lambda: driver.start(spec.instance_id), lambda: driver.stop(spec.instance_id)):
        with pytest.raises(Conflict, match="was not made by cloudland"):
            call()
    assert hv.state(spec.instance_id) is DomainState.SHUTOFF
    assert hv.volume(overlay_name(spec.instance_id)) is None
    assert driver.inventory() == {}


@pytest.mark.parametrize("step", ["download", "overlay", "volume", "seed", "define", "start"])
def test_a_failed_create_removes_every_piece(step: str, driver: ComputeDriver, hv: Hypervisor, images: ImageCache,
                                             libvirt_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = new_spec()
    if step == "download":  # not cached, and its link leads nowhere
        spec = new_spec(image=ImageFile(str(uuid.uuid4()), "qcow2", "0" * 64, "http://127.0.0.1:9/image"))
    elif step == "overlay":  # a volume of the overlay's name appears meanwhile (as if another create raced)
        real = hv.create_overlay
        monkeypatch.setattr(hv, "create_overlay", lambda name, *args: (hv.create_volume(name, GIB, "qcow2"),
                                                                       real(name, *args)))
    elif step == "volume":
        spec = new_spec(volume_ids=(str(uuid.uuid4()),))
    elif step == "seed":
        monkeypatch.setattr("backend.compute.seed.write", lambda path, data: (_ for _ in ()).throw(
            OSError(28, "No space left on device")))
    elif step == "define":  # a domain XML libvirt refuses
        monkeypatch.setattr("backend.compute.domain.build", lambda _spec: "<domain type='qemu'><name>x</name></domain>")
    else:  # QEMU does not start
        def fail(name: str) -> None:
            raise HypervisorError(f"start domain {name}: internal error: QEMU unexpectedly closed the monitor")
        monkeypatch.setattr(hv, "start", fail)
    with pytest.raises(ComputeError, match=f"create instance {spec.instance_id}: ") as caught:
        driver.create(spec)
    expected = {"download": "cannot download it", "overlay": "create volume inst-", "volume": "is not on this host",
                "seed": "No space left on device", "define": "define the domain", "start": "QEMU unexpectedly"}
    assert expected[step] in str(caught.value)
    assert leftovers(driver, hv, libvirt_conn, spec.instance_id) == []
    assert driver.inventory() == {}


def test_a_create_whose_clean_up_fails_says_so(driver: ComputeDriver, hv: Hypervisor,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spec = new_spec()

    def fail(name: str) -> None:
        raise HypervisorError(f"start domain {name}: boom")

    def fail_undefine(name: str) -> None:
        raise HypervisorError(f"undefine domain {name}: libvirtd went away")

    monkeypatch.setattr(hv, "start", fail)
    monkeypatch.setattr(hv, "undefine", fail_undefine)
    with pytest.raises(ComputeError, match="boom \\(and cleaning up failed: undefine domain .*: libvirtd went away; "
                                           "instance.delete retries it\\)"):
        driver.create(spec)
    monkeypatch.undo()
    driver.delete(spec.instance_id)
    assert hv.state(spec.instance_id) is None


def test_a_create_left_half_done_by_a_killed_backend_starts_afresh(driver: ComputeDriver, hv: Hypervisor) -> None:
    spec = new_spec()
    hv.create_volume(overlay_name(spec.instance_id), GIB, "qcow2")  # an overlay, but no domain
    assert driver.create(spec) is PowerState.RUNNING
    overlay = hv.volume(overlay_name(spec.instance_id))
    assert overlay is not None and overlay.capacity_bytes == 2 * GIB


def test_volumes(driver: ComputeDriver, hv: Hypervisor) -> None:
    volume_id = str(uuid.uuid4())
    driver.create_volume(volume_id, 5)
    driver.create_volume(volume_id, 5)  # a replay: nothing more
    volume = hv.volume(volume_name(volume_id))
    assert volume is not None and volume.capacity_bytes == 5 * GIB and volume.name == f"vol-{volume_id}.qcow2"
    driver.delete_volume(volume_id)
    assert hv.volume(volume_name(volume_id)) is None
    driver.delete_volume(volume_id)  # absent: success


def test_snapshots_of_volumes_no_guest_runs_on(driver: ComputeDriver, hv: Hypervisor, libvirt_conn: Any) -> None:
    volume_id, snapshot_id, copy_id = (str(uuid.uuid4()) for _ in range(3))
    driver.create_volume(volume_id, 2)
    assert driver.snapshot_volume(volume_id, snapshot_id) is Consistency.OFFLINE
    snapshot = hv.volume(snapshot_name(snapshot_id))
    assert snapshot is not None and snapshot.capacity_bytes == 2 * GIB
    pool = libvirt_conn.storagePoolLookupByName(POOL)
    # a copy of its own: no backing file ties it to its volume
    assert ET.fromstring(pool.storageVolLookupByName(snapshot.name).XMLDesc(0)).find("backingStore/path") is None
    assert driver.snapshot_volume(volume_id, snapshot_id) is Consistency.OFFLINE  # again: a fresh copy

    # Volumes from it: at least its size, a copy too; a replay does nothing more.
    with pytest.raises(BadRequest, match="smaller than snapshot"):
        driver.create_volume(copy_id, 1, snapshot_id)
    assert hv.volume(volume_name(copy_id)) is None
    driver.create_volume(copy_id, 2, snapshot_id)
    driver.create_volume(copy_id, 2, snapshot_id)
    assert hv.volume(volume_name(copy_id)) is not None
    with pytest.raises(NotFound, match="is not on this host"):
        driver.create_volume(str(uuid.uuid4()), 2, str(uuid.uuid4()))

    # Volume, snapshot and copy go in any order; deleting is idempotent.
    driver.delete_volume(volume_id)
    driver.delete_snapshot(snapshot_id)
    driver.delete_snapshot(snapshot_id)
    assert hv.volume(snapshot_name(snapshot_id)) is None and hv.volume(volume_name(copy_id)) is not None
    with pytest.raises(NotFound, match=f"volume {volume_id} is not on this host"):
        driver.snapshot_volume(volume_id, snapshot_id)

    # Attached to a stopped instance: nothing writes, so a plain copy.
    spec = new_spec(volume_ids=(copy_id,))
    driver.create(spec)
    driver.stop(spec.instance_id)
    assert driver.snapshot_volume(copy_id, snapshot_id) is Consistency.OFFLINE


def test_a_live_snapshot_that_fails_leaves_no_copy_and_the_guest_on_its_volume(
        driver: ComputeDriver, hv: Hypervisor) -> None:
    """The test driver has no disk-only snapshots: the live path fails at its first call."""
    volume_id, snapshot_id = str(uuid.uuid4()), str(uuid.uuid4())
    driver.create_volume(volume_id, 1)
    spec = new_spec(volume_ids=(volume_id,))
    driver.create(spec)
    assert domain.parse(hv.xml(spec.instance_id)).has_agent
    with pytest.raises(ComputeError, match=f"snapshot disk vdb of domain {spec.instance_id}"):
        driver.snapshot_volume(volume_id, snapshot_id)
    assert hv.volume(snapshot_name(snapshot_id)) is None
    assert not (driver.instance_dir(spec.instance_id) / f"snapshot-{volume_id}.qcow2").exists()
    volume = hv.volume(volume_name(volume_id))
    assert volume is not None
    assert [d.target for d in domain.parse(hv.xml(spec.instance_id)).disks if d.path == volume.path] == ["vdb"]
    assert hv.state(spec.instance_id) is DomainState.RUNNING


def test_volumes_attached_at_create(driver: ComputeDriver, hv: Hypervisor) -> None:
    """Attached from the start (the spec's ``volumes``): in the definition, no hotplug needed."""
    volume_ids = (str(uuid.uuid4()), str(uuid.uuid4()))
    for volume_id in volume_ids:
        driver.create_volume(volume_id, 1)
    spec = new_spec(volume_ids=volume_ids)
    other = new_spec()
    driver.create(spec)
    driver.create(other)
    disks = domain.parse(hv.xml(spec.instance_id)).disks
    assert [(d.target, d.serial) for d in disks if d.serial] == [("vdb", volume_ids[0][:20]),
                                                                  ("vdc", volume_ids[1][:20])]

    # A replay of the attach answers the device; elsewhere it is refused, and so is deleting it.
    assert driver.attach_volume(volume_ids[1], spec.instance_id) == "vdc"
    with pytest.raises(Conflict, match=f"volume {volume_ids[0]} is attached to {spec.instance_id}"):
        driver.attach_volume(volume_ids[0], other.instance_id)
    with pytest.raises(Conflict, match="detach it first"):
        driver.delete_volume(volume_ids[0])
    driver.detach_volume(volume_ids[0], other.instance_id)  # not attached there: nothing to do

    # Deleting the instance keeps its volumes, which can then go.
    driver.delete(spec.instance_id)
    for volume_id in volume_ids:
        assert hv.volume(volume_name(volume_id)) is not None
        driver.delete_volume(volume_id)


def test_hotplug_is_beyond_the_test_driver(driver: ComputeDriver, hv: Hypervisor) -> None:
    """The calls are made as they would be on QEMU; the test driver answers that it has none
    (real attach and detach are in the real-guest tests)."""
    volume_id = str(uuid.uuid4())
    driver.create_volume(volume_id, 1)
    spec = new_spec(volume_ids=(volume_id,))
    driver.create(spec)
    with pytest.raises(Unsupported, match=f"detach vdb from domain {spec.instance_id}"):
        driver.detach_volume(volume_id, spec.instance_id)
    other = new_spec()
    driver.create(other)
    driver.delete(spec.instance_id)
    with pytest.raises(Unsupported, match="as vdb: .*virDomainAttachDeviceFlags"):
        driver.attach_volume(volume_id, other.instance_id)


def test_volume_errors(driver: ComputeDriver) -> None:
    spec = new_spec()
    driver.create(spec)
    with pytest.raises(NotFound, match="volume .* is not on this host"):
        driver.attach_volume(str(uuid.uuid4()), spec.instance_id)
    volume_id = str(uuid.uuid4())
    driver.create_volume(volume_id, 1)
    with pytest.raises(NotFound, match="instance .* is not on this host"):
        driver.attach_volume(volume_id, str(uuid.uuid4()))
    driver.detach_volume(volume_id, str(uuid.uuid4()))  # no such instance: nothing attached


def test_console(driver: ComputeDriver) -> None:
    spec = new_spec()
    driver.create(spec)
    assert driver.console(spec.instance_id, 1024).log == ""  # nothing logged yet
    (driver.instance_dir(spec.instance_id) / "console.log").write_bytes(b"early\nlogin: \xff\n")
    console = driver.console(spec.instance_id, 9)
    assert console.log == "login: \ufffd\n"  # the tail, undecodable bytes replaced
    assert console.vnc_port is None  # the test driver opens no VNC server


def test_the_pool_is_made_on_first_use_where_configured(tmp_path: Path, libvirt_conn: Any) -> None:
    assert POOL not in libvirt_conn.listStoragePools()
    hv = Hypervisor(URI, tmp_path / "pool", HOST)
    assert hv.volume("nothing") is None
    pool = libvirt_conn.storagePoolLookupByName(POOL)
    assert pool.isActive() and pool.autostart()
    assert ET.fromstring(pool.XMLDesc(0)).findtext("target/path") == str(tmp_path / "pool")
    hv.close()
    elsewhere = Hypervisor(URI, tmp_path / "moved", HOST)
    with pytest.raises(HypervisorError, match="is at .*/pool, not at the configured compute.pool_dir .*/moved"):
        elsewhere.volume("nothing")
    elsewhere.close()


def test_a_dropped_connection_is_reopened(hv: Hypervisor, libvirt_conn: Any) -> None:
    assert hv.state("test") is DomainState.RUNNING
    hv._conn.close()  # as if libvirtd restarted (libvirt_conn keeps the test driver's state alive)
    assert hv.state("test") is DomainState.RUNNING


def run(registry: OpRegistry, op: str, args: Any) -> Result:
    """The op as the tree runs it: on the registry's worker pool, answered through a callback."""
    answered = threading.Event()
    results: list[Result] = []
    registry.execute(op, args, lambda result: (results.append(result), answered.set()))
    assert answered.wait(10), f"{op} did not answer"
    return results[0]


def test_registered_ops(tmp_path: Path, libvirt_conn: Any) -> None:
    registry = OpRegistry(workers=2)
    config = BackendConfig(node_id="hv1", data_dir=str(tmp_path), compute=ComputeSection(
        uri=URI, domain_type="qemu", stop_timeout_s=0.1))
    register(registry, config)
    try:
        durable = ["instance.create", "instance.delete", "instance.start", "instance.stop", "instance.reboot",
                   "instance.resize", "volume.create", "volume.delete", "volume.attach", "volume.detach",
                   "volume.snapshot", "snapshot.delete"]
        assert all(registry.is_durable(op) for op in durable)
        assert registry.is_durable("compute.inventory") is False
        assert registry.is_durable("instance.console") is False

        (tmp_path / "images" / IMAGE.id).write_bytes(fake_qcow2(virtual_size=GIB, length=32))
        instance_id = str(uuid.uuid4())
        body = {"instance": {
            "instance_id": instance_id, "name": "web", "vcpus": 1, "memory_mb": 128, "disk_gb": 1,
            "image": {"id": IMAGE.id, "format": "qcow2", "checksum": IMAGE.checksum, "size_bytes": 32,
                      "url": IMAGE.url},
            "kernel": None, "initrd": None, "ssh_keys": [], "user_data": "",
            "ports": [{"id": str(uuid.uuid4()), "mac": "52:54:00:AA:BB:CC", "ip": "10.0.0.5",
                       "subnet_id": str(uuid.uuid4()), "network_id": str(uuid.uuid4())}],
            "volumes": []}}
        assert run(registry, "instance.create", body).payload == {"power_state": "running"}
        assert (tmp_path / "instances" / instance_id / "seed.iso").exists()
        assert run(registry, "compute.inventory", {}).payload == {
            "instances": [{"id": instance_id, "power_state": "running"}]}
        assert run(registry, "instance.stop", {"instance_id": instance_id, "timeout_s": 1}).payload == {
            "power_state": "shutoff"}
        assert run(registry, "instance.console", {"instance_id": instance_id}).payload == {"log": "", "vnc_port": None}

        bad = run(registry, "instance.create", {"instance": {**body["instance"], "vcpus": 0}})
        assert (bad.status, bad.exit_status) == (Status.ERROR, 64)
        assert bad.message == "instance.create: args.instance.vcpus: must be a whole number from 1 to 1024 (got 0)"
        missing = run(registry, "instance.start", {"instance_id": str(uuid.uuid4())})
        assert (missing.status, missing.exit_status) == (Status.ERROR, 1)
        assert "is not on this host" in missing.message

        assert run(registry, "instance.delete", {"instance_id": instance_id}).payload == {}
        assert run(registry, "compute.inventory", {}).payload == {"instances": []}

        volume_id, snapshot_id, copy_id = (str(uuid.uuid4()) for _ in range(3))
        assert run(registry, "volume.create", {"volume_id": volume_id, "size_gb": 1}).payload == {}
        assert run(registry, "volume.snapshot", {"volume_id": volume_id, "snapshot_id": snapshot_id}).payload == {
            "consistency": "offline"}
        assert run(registry, "volume.create", {"volume_id": copy_id, "size_gb": 1,
                                               "snapshot_id": snapshot_id}).payload == {}
        assert run(registry, "snapshot.delete", {"snapshot_id": snapshot_id}).payload == {}
        bad = run(registry, "volume.snapshot", {"volume_id": volume_id, "snapshot_id": "monday"})
        assert (bad.status, bad.exit_status) == (Status.ERROR, 64) and "args.snapshot_id" in bad.message
    finally:
        registry.close()


# --- what happens to a domain that no op asked for ----------------------------------------


def test_a_domains_changes_behind_the_drivers_back_are_told_with_their_cause(
        driver: ComputeDriver, hv: Hypervisor, libvirt_conn: Any) -> None:
    heard: queue.Queue[DomainChange] = queue.Queue()
    events = DomainEvents(hv, heard.put)
    events.start()
    try:
        spec = new_spec()
        driver.create(spec)
        assert heard.get(timeout=5) == DomainChange(spec.instance_id, DomainState.RUNNING, "started")
        guest = libvirt_conn.lookupByName(spec.instance_id)
        guest.suspend()
        assert heard.get(timeout=5) == DomainChange(spec.instance_id, DomainState.PAUSED, "paused")
        guest.resume()
        assert heard.get(timeout=5) == DomainChange(spec.instance_id, DomainState.RUNNING, "resumed")
        guest.destroy()
        change = heard.get(timeout=5)
        assert change == DomainChange(spec.instance_id, DomainState.SHUTOFF, "powered off on its hypervisor")
        notice = power_notice(change)
        assert (notice["instance"], notice["power_state"], notice["cause"]) == \
            (spec.instance_id, "shutoff", "powered off on its hypervisor")
        libvirt_conn.lookupByName("test").destroy()  # the stock domain: not ours, never told
        # An event that no longer holds when handled (the guest is off, not running) is history.
        events._event(libvirt_conn, guest, libvirt.VIR_DOMAIN_EVENT_STARTED, 0, None)
        with pytest.raises(queue.Empty):
            heard.get(timeout=0.5)
    finally:
        events.stop()


@pytest.mark.parametrize(("event", "detail", "state", "cause"), [
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED, DomainState.CRASHED,
     "crashed: its kernel panicked"),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED, DomainState.CRASHED, "crashed"),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, DomainState.SHUTOFF,
     "shut down from inside the guest"),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR, DomainState.PAUSED,
     "paused by the hypervisor on a disk I/O error (a full or failing disk)"),
])
def test_what_each_lifecycle_event_means(event: int, detail: int, state: DomainState, cause: str) -> None:
    assert change_of(event, detail) == (state, cause)


def test_events_that_are_no_news_are_not_told() -> None:
    assert change_of(libvirt.VIR_DOMAIN_EVENT_DEFINED, 0) is None
    assert change_of(libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, 0) is None  # a shutdown begun: "stopped" follows


def test_a_crashed_domain_is_reported_crashed() -> None:
    assert PowerState.of(DomainState.CRASHED) is PowerState.CRASHED
    assert PowerState.of(DomainState.PAUSED) is PowerState.PAUSED
    assert PowerState.of(DomainState.SHUTOFF) is PowerState.SHUTOFF
    assert state_of(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED) is DomainState.CRASHED
    assert state_of(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN) is DomainState.SHUTOFF
    # QEMU held for a moment while it starts (what a reconcile may catch): not paused.
    assert state_of(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP) is DomainState.RUNNING
    assert state_of(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR) is DomainState.PAUSED
