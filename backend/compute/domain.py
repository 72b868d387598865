"""Domain XML: built from a ``DomainSpec``, and read back for what the driver needs.

Pure functions over ``xml.etree.ElementTree``: every value goes in as an attribute or a text
node, so a title or a path can never change the document's structure.  Our domains carry a
metadata element in our namespace; that element, not the name, is what makes a domain ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

from ..ports import tap_name

__all__ = ["AGENT_CHANNEL", "METADATA_NS", "DirectBoot", "Disk", "DiskFormat", "DomainInfo", "DomainSpec",
           "DomainType", "Nic", "build", "disk_snapshot_xml", "disk_xml", "files_used", "moved_disk", "parse",
           "resized", "tap_name"]

#: the namespace of our ``<metadata>`` element; versioned in case its content ever changes
METADATA_NS = "https://cloudland.dev/xmlns/instance/1"
# ElementTree's prefix table is global: registering makes our element print as cloudland:instance.
ET.register_namespace("cloudland", METADATA_NS)

#: the virtio-serial port QEMU's guest agent listens on (qemu-guest-agent's default)
AGENT_CHANNEL = "org.qemu.guest_agent.0"

DomainType = Literal["kvm", "qemu"]
DiskFormat = Literal["qcow2", "raw"]

@dataclass(frozen=True, slots=True)
class Disk:
    path: Path
    format: DiskFormat
    #: the device name asked for (vda, vdb, ...); the guest may name disks differently
    target: str
    readonly: bool = False
    #: shown to the guest as /dev/disk/by-id/virtio-<serial> (at most 20 characters are kept)
    serial: str | None = None
    #: a read-only CD-ROM on a virtio-scsi controller instead of a virtio disk: the seed, so
    #: that the guest's virtio disks are the root (vda) and the volumes (vdb, vdc, ...) in
    #: order.  Not SATA: Debian's cloud kernel, like most cloud kernels, has no AHCI driver,
    #: while every cloud kernel has virtio-scsi and sr_mod (docs/images.md).
    cdrom: bool = False


@dataclass(frozen=True, slots=True)
class Nic:
    mac: str
    #: the tap libvirt creates for the NIC; the network driver plugs it into a bridge
    tap: str


@dataclass(frozen=True, slots=True)
class DirectBoot:
    kernel: Path
    initrd: Path | None
    cmdline: str


@dataclass(frozen=True, slots=True)
class DomainSpec:
    #: the domain's name and UUID
    instance_id: str
    #: the backend (tree node id) that owns the domain: several may share one libvirtd
    host: str
    #: the user's name for the instance, shown by virsh as the title
    title: str
    vcpus: int
    memory_mb: int
    domain_type: DomainType
    #: the root disk first: it is the one booted from unless ``boot`` is set
    disks: tuple[Disk, ...]
    nics: tuple[Nic, ...]
    #: where the serial console is logged
    console_log: Path
    boot: DirectBoot | None = None


@dataclass(frozen=True, slots=True)
class DomainInfo:
    disks: tuple[Disk, ...]
    #: None while the domain is shut off (or before QEMU picked its port)
    vnc_port: int | None
    console_log: Path | None
    #: the domain has UEFI variables (never ours, but they must go with the domain)
    has_nvram: bool
    #: the domain has a guest agent channel (whether an agent answers on it is the guest's business)
    has_agent: bool = False


def build(spec: DomainSpec) -> str:
    root = ET.Element("domain", type=spec.domain_type)
    ET.SubElement(root, "name").text = spec.instance_id
    ET.SubElement(root, "uuid").text = spec.instance_id
    ET.SubElement(root, "title").text = spec.title
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, f"{{{METADATA_NS}}}instance", id=spec.instance_id, host=spec.host)
    ET.SubElement(root, "memory", unit="MiB").text = str(spec.memory_mb)
    ET.SubElement(root, "vcpu").text = str(spec.vcpus)
    os_ = ET.SubElement(root, "os")
    # x86_64 only: kvm.detect's probe is x86 machine code, and so are the images we serve.
    ET.SubElement(os_, "type", arch="x86_64").text = "hvm"
    if spec.boot is not None:
        ET.SubElement(os_, "kernel").text = str(spec.boot.kernel)
        if spec.boot.initrd is not None:
            ET.SubElement(os_, "initrd").text = str(spec.boot.initrd)
        ET.SubElement(os_, "cmdline").text = spec.boot.cmdline
    features = ET.SubElement(root, "features")
    # ACPI lets instance.stop ask the guest to power off instead of pulling the plug.
    ET.SubElement(features, "acpi")
    if spec.domain_type == "kvm":
        # The host's CPU features are only there with KVM; TCG (qemu) emulates its default model.
        ET.SubElement(root, "cpu", mode="host-passthrough")
    ET.SubElement(root, "clock", offset="utc")
    devices = ET.SubElement(root, "devices")
    if any(disk.cdrom for disk in spec.disks):
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for index, disk in enumerate(spec.disks):
        # A per-device boot order rather than <os><boot dev='hd'/>, which would try every disk.
        boot_first = index == 0 and spec.boot is None
        devices.append(_disk(disk, boot_order=1 if boot_first else None))
    for nic in spec.nics:
        devices.append(_interface(nic))
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=str(spec.console_log), append="on")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    # Loopback only: the VNC port is for an operator's tunnel or a console proxy, never the world.
    ET.SubElement(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    # Entropy from the host: a fresh cloud guest otherwise waits for it before sshd has keys.
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    # pvpanic (ISA, as the pc and q35 machines both take it): a guest kernel that panics says
    # so, and libvirt reports the domain crashed instead of running.
    ET.SubElement(devices, "panic", model="isa")
    # The guest agent's port: where an image runs qemu-guest-agent, a volume snapshot freezes
    # the guest's file systems first; without one it is crash-consistent (docs/images.md).
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name=AGENT_CHANNEL)
    return ET.tostring(root, encoding="unicode")


def disk_xml(disk: Disk) -> str:
    """The ``<disk>`` element alone, for attaching and detaching."""
    return ET.tostring(_disk(disk, boot_order=None), encoding="unicode")


def _disk(disk: Disk, boot_order: int | None) -> ET.Element:
    element = ET.Element("disk", type="file", device="cdrom" if disk.cdrom else "disk")
    ET.SubElement(element, "driver", name="qemu", type=disk.format)
    ET.SubElement(element, "source", file=str(disk.path))
    ET.SubElement(element, "target", dev=disk.target, bus="scsi" if disk.cdrom else "virtio")
    if disk.readonly or disk.cdrom:
        ET.SubElement(element, "readonly")
    if disk.serial is not None:
        ET.SubElement(element, "serial").text = disk.serial[:20]
    if boot_order is not None:
        ET.SubElement(element, "boot", order=str(boot_order))
    return element


def _interface(nic: Nic) -> ET.Element:
    element = ET.Element("interface", type="ethernet")
    ET.SubElement(element, "mac", address=nic.mac)
    ET.SubElement(element, "target", dev=nic.tap)
    ET.SubElement(element, "model", type="virtio")
    return element


def resized(xml: str, vcpus: int, memory_mb: int) -> str:
    """``xml`` (a domain's inactive XML) with a new size; everything else, attached volumes too, kept."""
    root = ET.fromstring(xml)
    for vcpu in root.iterfind("vcpu"):
        vcpu.attrib.pop("current", None)  # a lower "current" count would silently cap the new size
        vcpu.text = str(vcpus)
    for tag in ("memory", "currentMemory"):
        for element in root.iterfind(tag):
            element.attrib = {"unit": "MiB"}
            element.text = str(memory_mb)
    return ET.tostring(root, encoding="unicode")


def disk_snapshot_xml(target: str, overlay: Path, others: tuple[str, ...]) -> str:
    """A disk-only snapshot of ``target`` into a new qcow2 ``overlay``; the disks ``others`` are left out."""
    root = ET.Element("domainsnapshot")
    disks = ET.SubElement(root, "disks")
    disk = ET.SubElement(disks, "disk", name=target, snapshot="external", type="file")
    ET.SubElement(disk, "driver", type="qcow2")
    ET.SubElement(disk, "source", file=str(overlay))
    for other in others:
        ET.SubElement(disks, "disk", name=other, snapshot="no")
    return ET.tostring(root, encoding="unicode")


def files_used(xml: str) -> set[Path]:
    """Every file the domain's disks read: their sources, and the files under them (a live
    snapshot's overlay sits on the volume's file until it is merged back)."""
    root = ET.fromstring(xml)
    return {Path(source.get("file", "")) for source in root.iterfind("devices/disk//source") if source.get("file")}


def boot_files(xml: str) -> set[Path]:
    """The kernel and initrd the domain boots directly, if it does."""
    os_ = ET.fromstring(xml).find("os")
    if os_ is None:
        return set()
    return {Path(text) for tag in ("kernel", "initrd") if (text := os_.findtext(tag))}


def moved_disk(xml: str, old: Path, new: Path) -> str:
    """``xml`` (a domain's inactive XML) with the disk on file ``old`` on file ``new``, and no backing chain."""
    root = ET.fromstring(xml)
    for element in root.iterfind("devices/disk"):
        source = element.find("source")
        if source is not None and source.get("file") == str(old):
            source.set("file", str(new))
            for chain in element.findall("backingStore"):
                element.remove(chain)
    return ET.tostring(root, encoding="unicode")


def metadata_host(element_xml: str) -> str | None:
    """The owning backend named in our metadata element (as libvirt returns it on its own)."""
    try:
        return ET.fromstring(element_xml).get("host")
    except ET.ParseError:
        return None


def parse(xml: str) -> DomainInfo:
    root = ET.fromstring(xml)
    disks = tuple(disk for element in root.iterfind("devices/disk") if (disk := _parse_disk(element)) is not None)
    vnc_port: int | None = None
    graphics = root.find("devices/graphics[@type='vnc']")
    if graphics is not None and int(graphics.get("port", "-1")) > 0:
        vnc_port = int(graphics.get("port", "-1"))
    log = root.find("devices/serial/log")
    console_log = Path(log.get("file", "")) if log is not None and log.get("file") else None
    agent = root.find(f"devices/channel/target[@name='{AGENT_CHANNEL}']")
    return DomainInfo(disks, vnc_port, console_log, root.find("os/nvram") is not None, agent is not None)


def _parse_disk(element: ET.Element) -> Disk | None:
    """A file-backed disk of ours; None for anything else (a CD-ROM without media, a network disk)."""
    source = element.find("source")
    target = element.find("target")
    driver = element.find("driver")
    if source is None or target is None or not source.get("file"):
        return None
    fmt = driver.get("type", "raw") if driver is not None else "raw"
    serial = element.find("serial")
    cdrom = element.get("device") == "cdrom"  # read-only by nature: <readonly/> is implied, not a choice
    return Disk(path=Path(source.get("file", "")), format="qcow2" if fmt == "qcow2" else "raw",
                target=target.get("dev", ""), readonly=not cdrom and element.find("readonly") is not None,
                serial=serial.text if serial is not None else None, cdrom=cdrom)
