"""Domain and storage XML: built for several specs, parsed back, and accepted by libvirt's test driver."""

from __future__ import annotations

import ast
import inspect
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree as ET

import libvirt
import pytest

from backend.compute import domain, storagexml
from backend.compute.domain import METADATA_NS, DirectBoot, Disk, DomainSpec, Nic

INSTANCE = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
PORTS = ("0b7c4c36-5a3e-4f67-9a43-1f2e3d4c5b6a", "9d8e7f6a-1b2c-4d3e-8f4a-5b6c7d8e9f0a")

DISK_BOOT = DomainSpec(
    instance_id=INSTANCE, host="hv1", title="web-1", vcpus=2, memory_mb=512, domain_type="qemu",
    disks=(Disk(Path("/pool/inst.qcow2"), "qcow2", "vda"),
           Disk(Path("/instances/x/seed.iso"), "raw", "sda", cdrom=True),
           Disk(Path("/pool/vol-1.qcow2"), "qcow2", "vdb", serial="0123456789abcdef0123456789")),
    nics=tuple(Nic(f"52:54:00:00:00:0{i}", domain.tap_name(port)) for i, port in enumerate(PORTS)),
    console_log=Path("/instances/x/console.log"))
KERNEL_BOOT = DomainSpec(
    instance_id=INSTANCE, host="hv1", title="tiny", vcpus=1, memory_mb=128, domain_type="kvm",
    disks=(Disk(Path("/pool/inst.qcow2"), "qcow2", "vda"),),
    nics=(), console_log=Path("/instances/x/console.log"),
    boot=DirectBoot(Path("/images/kernel"), Path("/images/initrd"), "console=ttyS0 quiet"))
# Characters that would break a document built by string formatting.
HOSTILE = DomainSpec(
    instance_id=INSTANCE, host="hv1", title="a<b>&\"c'", vcpus=1, memory_mb=64, domain_type="qemu",
    disks=(Disk(Path("/pool/we'ird <path>&.qcow2"), "qcow2", "vda"),), nics=(),
    console_log=Path("/instances/x/con\"sole.log"),
    boot=DirectBoot(Path("/images/k"), None, "console=ttyS0 init=/bin/sh -c 'echo <hi>'"))


def test_disk_boot_spec() -> None:
    root = ET.fromstring(domain.build(DISK_BOOT))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == INSTANCE and root.findtext("uuid") == INSTANCE
    assert root.findtext("title") == "web-1"
    assert root.find("memory").attrib == {"unit": "MiB"} and root.findtext("memory") == "512"
    assert root.findtext("vcpu") == "2"
    assert root.find(f"metadata/{{{METADATA_NS}}}instance").get("id") == INSTANCE
    assert root.find("os/type").text == "hvm"
    assert root.find("os/kernel") is None and root.find("os/boot") is None
    assert root.find("features/acpi") is not None
    assert root.find("cpu") is None  # no host-passthrough under TCG

    disks = root.findall("devices/disk")
    assert [d.find("target").attrib for d in disks] == [
        {"dev": "vda", "bus": "virtio"}, {"dev": "sda", "bus": "scsi"}, {"dev": "vdb", "bus": "virtio"}]
    assert [d.get("device") for d in disks] == ["disk", "cdrom", "disk"]  # the seed stays off the virtio bus
    # ...on a virtio-scsi controller: cloud kernels carry its driver, not AHCI's
    assert [c.attrib for c in root.findall("devices/controller")] == [
        {"type": "scsi", "index": "0", "model": "virtio-scsi"}]
    assert [d.find("source").get("file") for d in disks] == [str(d.path) for d in DISK_BOOT.disks]
    assert [d.find("driver").get("type") for d in disks] == ["qcow2", "raw", "qcow2"]
    assert [d.find("readonly") is not None for d in disks] == [False, True, False]
    assert [b.get("order") for d in disks if (b := d.find("boot")) is not None] == ["1"]
    assert disks[0].find("boot") is not None
    assert disks[2].findtext("serial") == "0123456789abcdef0123"  # virtio-blk keeps 20 characters

    nics = root.findall("devices/interface")
    assert [n.get("type") for n in nics] == ["ethernet", "ethernet"]
    assert [n.find("mac").get("address") for n in nics] == ["52:54:00:00:00:00", "52:54:00:00:00:01"]
    assert [n.find("target").get("dev") for n in nics] == ["tap0b7c4c36-5a", "tap9d8e7f6a-1b"]
    assert [n.find("model").get("type") for n in nics] == ["virtio", "virtio"]

    serial = root.find("devices/serial")
    assert serial.get("type") == "pty"
    assert serial.find("log").attrib == {"file": "/instances/x/console.log", "append": "on"}
    assert root.find("devices/console").get("type") == "pty"
    assert root.find("devices/graphics").attrib == {"type": "vnc", "autoport": "yes", "listen": "127.0.0.1"}
    assert root.find("devices/panic").attrib == {"model": "isa"}  # a panicking guest is reported crashed


def test_kernel_boot_spec() -> None:
    root = ET.fromstring(domain.build(KERNEL_BOOT))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.findtext("os/kernel") == "/images/kernel"
    assert root.findtext("os/initrd") == "/images/initrd"
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert root.find("devices/disk/boot") is None  # the kernel boots, not the disk
    assert root.findall("devices/interface") == []


def test_values_never_change_the_document() -> None:
    root = ET.fromstring(domain.build(HOSTILE))
    assert root.findtext("title") == "a<b>&\"c'"
    assert root.find("devices/disk/source").get("file") == "/pool/we'ird <path>&.qcow2"
    assert root.find("devices/serial/log").get("file") == "/instances/x/con\"sole.log"
    assert root.findtext("os/cmdline") == "console=ttyS0 init=/bin/sh -c 'echo <hi>'"
    assert root.find("os/initrd") is None


def test_no_xml_is_built_by_string_formatting() -> None:
    for module in (domain, storagexml):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.JoinedStr):
                literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                assert "<" not in literal, f"{module.__name__}: f-string with markup at line {node.lineno}"


@pytest.mark.parametrize("spec", [DISK_BOOT, KERNEL_BOOT, HOSTILE], ids=["disk", "kernel", "hostile"])
def test_parse_reads_back_what_build_wrote(spec: DomainSpec) -> None:
    info = domain.parse(domain.build(spec))
    assert info.disks == tuple(replace(disk, serial=disk.serial[:20] if disk.serial else None) for disk in spec.disks)
    assert info.console_log == spec.console_log
    assert info.vnc_port is None and info.has_nvram is False


@pytest.mark.parametrize("spec", [DISK_BOOT, KERNEL_BOOT, HOSTILE], ids=["disk", "kernel", "hostile"])
def test_libvirt_accepts_it(spec: DomainSpec) -> None:
    conn = libvirt.open("test:///default")
    try:
        conn.defineXML(domain.build(spec))
        defined = conn.lookupByName(INSTANCE)
        info = domain.parse(defined.XMLDesc(0))
        assert sorted(d.target for d in info.disks) == sorted(d.target for d in spec.disks)  # libvirt groups by bus
        element = defined.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        assert element == f'<instance id="{INSTANCE}" host="hv1"/>' and domain.metadata_host(element) == "hv1"
        defined.undefine()
    finally:
        conn.close()


def test_parse_reads_a_running_domains_vnc_port() -> None:
    root = ET.fromstring(domain.build(DISK_BOOT))
    root.find("devices/graphics").set("port", "5907")
    assert domain.parse(ET.tostring(root, encoding="unicode")).vnc_port == 5907
    root.find("devices/graphics").set("port", "-1")  # libvirt's "not chosen yet"
    assert domain.parse(ET.tostring(root, encoding="unicode")).vnc_port is None


def test_resized_changes_the_size_and_keeps_the_rest() -> None:
    root = ET.fromstring(domain.build(DISK_BOOT))
    ET.SubElement(root, "currentMemory", unit="KiB").text = "1024"
    root.find("vcpu").set("current", "1")
    after = ET.fromstring(domain.resized(ET.tostring(root, encoding="unicode"), vcpus=4, memory_mb=2048))
    assert after.findtext("vcpu") == "4" and after.find("vcpu").get("current") is None
    assert after.findtext("memory") == "2048" and after.find("memory").get("unit") == "MiB"
    assert after.findtext("currentMemory") == "2048" and after.find("currentMemory").get("unit") == "MiB"
    assert after.find(f"metadata/{{{METADATA_NS}}}instance") is not None
    assert len(after.findall("devices/disk")) == 3


def test_tap_names_fit_in_ifnamsiz() -> None:
    assert all(len(domain.tap_name(port)) <= 15 for port in PORTS)
    assert domain.tap_name(PORTS[0]) == "tap" + PORTS[0][:11]


def test_volume_and_pool_xml() -> None:
    overlay = ET.fromstring(storagexml.volume_xml("inst-x.qcow2", 3 << 30, "qcow2",
                                                  (Path("/images/abc <&>"), "raw")))
    assert overlay.findtext("name") == "inst-x.qcow2"
    assert overlay.findtext("capacity") == str(3 << 30) and overlay.find("capacity").get("unit") == "bytes"
    assert overlay.find("target/format").get("type") == "qcow2"
    assert overlay.findtext("backingStore/path") == "/images/abc <&>"
    assert overlay.find("backingStore/format").get("type") == "raw"
    plain = ET.fromstring(storagexml.volume_xml("vol-y.raw", 1 << 30, "raw"))
    assert plain.find("backingStore") is None and plain.find("target/format").get("type") == "raw"
    pool = storagexml.pool_xml("cloudland", Path("/var/lib/cloudland/pool"))
    assert ET.fromstring(pool).get("type") == "dir"
    assert storagexml.pool_path(pool) == Path("/var/lib/cloudland/pool")


def test_files_used_include_what_lies_under_a_disk() -> None:
    """A live snapshot's overlay sits on the volume's file: the volume is still in use."""
    xml = """<domain><devices>
      <disk type='file' device='disk'><source file='/i/snapshot-v.qcow2'/><target dev='vdb'/>
        <backingStore type='file'><format type='qcow2'/><source file='/pool/vol-v.qcow2'/></backingStore></disk>
      <disk type='file' device='cdrom'><source file='/i/seed.iso'/><target dev='sda'/></disk>
    </devices></domain>"""
    assert domain.files_used(xml) == {Path("/i/snapshot-v.qcow2"), Path("/pool/vol-v.qcow2"), Path("/i/seed.iso")}
    moved = domain.moved_disk(xml, Path("/i/snapshot-v.qcow2"), Path("/pool/vol-v.qcow2"))
    assert domain.files_used(moved) == {Path("/pool/vol-v.qcow2"), Path("/i/seed.iso")}


def test_disk_snapshot_leaves_the_other_disks_out() -> None:
    root = ET.fromstring(domain.disk_snapshot_xml("vdb", Path("/i/o.qcow2"), ("vda", "sda")))
    assert [(d.get("name"), d.get("snapshot")) for d in root.iterfind("disks/disk")] == [
        ("vdb", "external"), ("vda", "no"), ("sda", "no")]
    assert root.find("disks/disk/source").get("file") == "/i/o.qcow2"
