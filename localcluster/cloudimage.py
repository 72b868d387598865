"""A Debian cloud image made here from Debian's packages: what a stock Debian cloud image holds.

``python -m localcluster.cloudimage OUTDIR`` writes ``OUTDIR/debian-12-cloud.qcow2`` and a
``manifest.json`` beside it (idempotent: a second run with the same recipe only prints the
paths; a changed recipe builds anew).

The image is what an operator downloads from Debian, not a guest made for this project:
Debian's cloud kernel (``linux-image-cloud-amd64``, which carries virtio and SCSI CD-ROM
drivers but no AHCI), cloud-init, openssh-server and growpart, booted by GRUB from an MBR
disk whose one partition is the ext4 root (labelled ``cloudroot``, the last partition, so
cloud-init's growpart can grow it to the flavor's disk).  The kernel logs to ttyS0 and
``/dev/console`` is the serial port, as on Debian's own images, so cloud-init's output reads
on the instance's serial console.  cloud-init's default user is ``debian``.

How it is made, without a loop device or a mount (CI runs it in a container):

1. ``mmdebstrap`` installs the packages into a directory, from the host's own apt sources;
2. the files a cloud image sets up are written (fstab, GRUB's config, no SSH host keys and an
   empty machine-id, so that every instance makes its own);
3. ``mke2fs -d`` builds the root file system from the directory, into a file;
4. the disk is assembled by hand: an MBR with GRUB's ``boot.img``, GRUB's ``core.img``
   (``grub-mkimage``, embedding what it needs to read ext4 and boot Linux) in the gap before
   the partition, one partition entry, and the file system at 1 MiB;
5. ``qemu-img convert`` makes it a compressed qcow2.

Building takes a few minutes and downloads about 150 MB of packages; the result is cached in
OUTDIR (``/var/tmp/cloudland-cloud-image`` for the tests) and keyed by the recipe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .guest import locked

__all__ = ["DEFAULT_USER", "CloudImage", "build"]

SUITE = "bookworm"
IMAGE_NAME = "debian-12-cloud.qcow2"
DEFAULT_USER = "debian"
ROOT_LABEL = "cloudroot"

#: what Debian's genericcloud image boots with, less what needs a network this machine lacks
PACKAGES = (
    "linux-image-cloud-amd64",
    "cloud-init",
    "cloud-guest-utils",  # growpart
    "openssh-server",
    "systemd-sysv",
    "udev",
    "ifupdown",
    "isc-dhcp-client",
    "netbase",
    "sudo",
    "e2fsprogs",
    "iproute2",
)

KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200 consoleblank=0"

GRUB_DIR = Path("/usr/lib/grub/i386-pc")
#: enough to find /boot/grub/grub.cfg on the first MBR partition and boot Linux from ext4
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "configfile", "echo", "test")

SECTOR = 512
PARTITION_START = 2048  # sectors: the 1 MiB gap before it holds GRUB's core.img
#: ext4 without the features GRUB 2.06 cannot read yet (it refuses unknown incompat features)
EXT4_FEATURES = "^metadata_csum_seed"
#: room left in the file system beyond what the packages take, for first boot and logs
SPARE_BYTES = 512 << 20

FSTAB = f"LABEL={ROOT_LABEL} / ext4 rw,discard,errors=remount-ro 0 1\n"
INTERFACES = "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n"

#: the tools the build runs, and the Debian packages that hold them
TOOLS = {"mmdebstrap": "mmdebstrap", "grub-mkimage": "grub-common", "mke2fs": "e2fsprogs",
         "qemu-img": "qemu-utils"}


@dataclass(frozen=True)
class CloudImage:
    """What ``build`` made."""

    path: Path
    kernel_version: str
    #: bytes the guest sees (the qcow2's virtual size): the smallest disk it can boot from
    virtual_size: int
    default_user: str = DEFAULT_USER


def build(outdir: Path | str) -> CloudImage:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out / ".lock"):
        key = _recipe_key()
        manifest_path = out / "manifest.json"
        image = out / IMAGE_NAME
        if manifest_path.exists() and image.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("recipe") == key:
                return CloudImage(image, manifest["kernel_version"], manifest["virtual_size"])
        _check_tools()
        with tempfile.TemporaryDirectory(dir=out, prefix="build-") as tmp:
            kernel_version, virtual_size = _make(Path(tmp), image)
        manifest = {"recipe": key, "kernel_version": kernel_version, "virtual_size": virtual_size,
                    "packages": list(PACKAGES), "suite": SUITE, "cmdline": KERNEL_CMDLINE}
        tmp_manifest = manifest_path.with_name(manifest_path.name + ".tmp")
        tmp_manifest.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp_manifest, manifest_path)
        return CloudImage(image, kernel_version, virtual_size)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m localcluster.cloudimage OUTDIR", file=sys.stderr)
        return 2
    image = build(args[0])
    print(f"image   {image.path}\nkernel  {image.kernel_version}\nsize    {image.virtual_size} bytes")
    return 0


# --- the steps ----------------------------------------------------------------------------


def _make(work: Path, image: Path) -> tuple[str, int]:
    rootfs = work / "rootfs"
    _run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
          "--aptopt=Acquire::Retries \"3\"", "--dpkgopt=path-exclude=/usr/share/doc/*",
          "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
          SUITE, str(rootfs), *_mirrors()])
    kernel_version = _kernel_version(rootfs)
    _configure(rootfs, kernel_version)

    fs = work / "root.ext4"
    fs_bytes = _round_up(_tree_bytes(rootfs) * 5 // 4 + SPARE_BYTES, 64 << 20)
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", EXT4_FEATURES, "-L", ROOT_LABEL, "-d", str(rootfs),
          str(fs), f"{fs_bytes // 1024}k"])
    shutil.rmtree(rootfs)

    core = work / "core.img"
    _run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_DIR), "-o", str(core),
          "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES])
    raw = work / "disk.raw"
    _assemble(raw, (GRUB_DIR / "boot.img").read_bytes(), core.read_bytes(), fs)
    fs.unlink()

    tmp_image = work / IMAGE_NAME
    _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(tmp_image)])
    virtual_size = raw.stat().st_size
    os.replace(tmp_image, image)
    return kernel_version, virtual_size


def _mirrors() -> list[str]:
    """The host's own Debian sources: the mirror this machine is known to reach."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    return [str(sources)] if sources.exists() else []


def _kernel_version(rootfs: Path) -> str:
    versions = sorted(p.name.removeprefix("vmlinuz-") for p in (rootfs / "boot").glob("vmlinuz-*"))
    if not versions:
        raise RuntimeError("mmdebstrap installed no kernel into /boot")
    return versions[-1]


def _configure(rootfs: Path, kernel_version: str) -> None:
    """What a cloud image's build sets up beyond its packages."""
    (rootfs / "etc/fstab").write_text(FSTAB)
    (rootfs / "etc/network/interfaces").write_text(INTERFACES)
    (rootfs / "etc/hostname").write_text("localhost\n")
    # Each instance makes its own: systemd a machine id, cloud-init the SSH host keys.
    (rootfs / "etc/machine-id").write_text("")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    grub = rootfs / "boot/grub"
    grub.mkdir(parents=True, exist_ok=True)
    (grub / "grub.cfg").write_text(
        "set timeout=0\nset default=0\nserial --unit=0 --speed=115200\n"
        f"menuentry 'Debian GNU/Linux ({kernel_version})' {{\n"
        f"    linux /boot/vmlinuz-{kernel_version} {KERNEL_CMDLINE}\n"
        f"    initrd /boot/initrd.img-{kernel_version}\n"
        "}\n")


def _assemble(raw: Path, boot_img: bytes, core_img: bytes, fs: Path) -> None:
    """An MBR disk: GRUB's boot sector, its core image in the gap, one bootable Linux partition.

    boot.img loads the sector its ``kernel_sector`` field names (1 as shipped) and core.img's
    first sector reads the rest from sector 2 on, its block count set by grub-mkimage: so
    neither needs patching when core.img sits at sector 1.
    """
    if len(core_img) > (PARTITION_START - 1) * SECTOR:
        raise RuntimeError(f"GRUB's core.img ({len(core_img)} bytes) does not fit before the partition")
    fs_sectors = fs.stat().st_size // SECTOR
    mbr = bytearray(boot_img[:440]) + bytes(SECTOR - 440)
    mbr[440:444] = os.urandom(4)  # the disk signature
    # One entry: bootable, type 0x83 (Linux), addressed by LBA; CHS fields saturated, as
    # fdisk writes them for disks past CHS range.
    mbr[446:462] = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                               PARTITION_START, fs_sectors)
    mbr[510:512] = b"\x55\xaa"
    with raw.open("wb") as disk:
        disk.write(mbr)
        disk.write(core_img)
        disk.seek(PARTITION_START * SECTOR)
        with fs.open("rb") as src:
            shutil.copyfileobj(src, disk, 8 << 20)


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _recipe_key() -> str:
    recipe = {"suite": SUITE, "packages": PACKAGES, "cmdline": KERNEL_CMDLINE, "grub": GRUB_MODULES,
              "fstab": FSTAB, "interfaces": INTERFACES, "features": EXT4_FEATURES, "spare": SPARE_BYTES,
              "format": 1}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _check_tools() -> None:
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None}
                     | ({"grub-pc-bin"} if not (GRUB_DIR / "boot.img").exists() else set()))
    if missing:
        raise RuntimeError("building the cloud image needs these Debian packages: " + " ".join(missing)
                           + " (scripts/ensure-test-tools.sh installs them)")


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")


if __name__ == "__main__":
    sys.exit(main())
