"""A tiny Linux guest for local clouds, tests and benchmarks: a Debian kernel and a busybox initramfs.

``python -m localcluster.guest OUTDIR`` writes into OUTDIR (offline once the kernel package is
cached there; idempotent: a second run with the same inputs only prints the paths):

- ``vmlinuz``: the kernel of Debian's ``linux-image-amd64`` (its dependency, the real
  ``linux-image-6.*-amd64`` package: ``apt-get download`` + ``dpkg -x``; the .deb stays cached
  in OUTDIR, it is never installed);
- ``initrd.img``: a gzip'd newc cpio with busybox-static (a symlink per applet), the kernel
  modules listed in ``MODULES`` and their dependencies (loaded in order by ``/init``), and the
  ``/init`` below;
- ``disk.qcow2``: an empty 64 MiB qcow2, the instance's root disk image (the guest never
  needs one: it runs from its initramfs);
- ``manifest.json``: kernel version, module load order, command line.

Boot it with direct kernel boot (``<os><kernel/><initrd/><cmdline/>``), the kernel command
line being ``CMDLINE`` (``console=ttyS0 quiet no_timer_check``): ttyS0 is where the guest reports, so give
the domain a serial port (a file or a pty). Use ``<domain type='qemu'>`` here (TCG: KVM hangs
on this machine's PVM kernel) and ``<features><acpi/></features>`` (power-off and the ACPI
power button need it). Under TCG it is ready ~7 s after start.

What ``/init`` does, all reported on the serial console one line each:

1. mounts proc, sysfs, devtmpfs; loads the modules (virtio pci/blk/net/scsi/console, IDE/SATA
   cdroms, isofs, vfat, the ACPI button and evdev, pvpanic);
2. finds the NoCloud seed: a filesystem labelled ``cidata`` (ISO9660 or vfat) on a cdrom
   (``/dev/sr*``), a virtio disk (``/dev/vd*``) or a SCSI disk (``/dev/sd*``), mounted
   read-only; ``CLOUDLAND-GUEST-NOSEED`` if there is none after 15 s;
3. reads ``meta-data`` (``instance-id``, ``local-hostname``, ``public-keys``) and
   ``user-data``; the hostname is the ``#cloud-config`` ``hostname`` if given, else
   ``local-hostname``; the key is the first of ``public-keys`` in meta-data, else the first
   of ``ssh_authorized_keys`` in a ``#cloud-config`` user-data;
4. starts busybox ``acpid`` (an ACPI power-button press, libvirt's graceful shutdown, runs
   ``poweroff -f``, printing ``CLOUDLAND-GUEST-POWEROFF``) and, for each ethN (eth0 for one
   virtio NIC), ``udhcpc`` in the background, asking for the MTU too; with a lease it applies
   address, MTU and default route and prints ``CLOUDLAND-GUEST-IP eth0 <ip>/<prefix>
   router=<gateway> mtu=<mtu>``, possibly after READY (no network or no DHCP server is fine;
   with an address it answers ping);
5. prints ``CLOUDLAND-GUEST-READY hostname=<h> instance=<id> key=<SHA256:...>`` (the key's
   OpenSSH fingerprint, empty without a key);
6. runs user-data if it is a script (``#!...``), its output on the console;
7. offers a root shell on ttyS0 (busybox ``sh -i``, once Enter is pressed there, and again
   when it exits): what a live console types into;
8. forever: ``CLOUDLAND-GUEST-BLOCK <name>`` once for each block device in /sys/block (those
   there at start too, loop/ram devices excepted), ``CLOUDLAND-GUEST-BLOCK-GONE <name>``
   when one goes away (a hot-attached volume shows up as ``CLOUDLAND-GUEST-BLOCK vdb``).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# no_timer_check: at boot the kernel checks that the IO-APIC timer ticks within a few busy-wait
# loops, and panics ("IO-APIC + timer doesn't work") when it does not.  A vCPU that a busy host
# does not run during those loops (TCG guests launched 20 at a time on 2 cores) fails it with a
# timer that works; QEMU's emulated timer always does, so the check only ever fails wrongly here.
CMDLINE = "console=ttyS0 quiet no_timer_check"

READY = "CLOUDLAND-GUEST-READY"
BLOCK = "CLOUDLAND-GUEST-BLOCK"
BLOCK_GONE = "CLOUDLAND-GUEST-BLOCK-GONE"
NOSEED = "CLOUDLAND-GUEST-NOSEED"
POWEROFF = "CLOUDLAND-GUEST-POWEROFF"
IP = "CLOUDLAND-GUEST-IP"

KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")  # from busybox-static (statically linked)
DISK_SIZE = "64M"

# Modules the guest loads (their dependencies come along). Built-in ones are skipped.
MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
    "ata_piix",  # IDE cdrom of the i440fx ("pc") machine
    "ahci",  # SATA cdrom of q35
    "sr_mod",
    "sd_mod",
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_utf8",
    "button",  # ACPI power button...
    "evdev",  # ...as /dev/input/event*, which acpid reads
    "pvpanic_mmio",  # the domain's ISA pvpanic device: a panic is told to the host, which reports the crash
)


@dataclass(frozen=True)
class Guest:
    """What ``build`` made."""

    kernel: Path
    initrd: Path
    disk: Path
    kernel_version: str
    modules: tuple[str, ...]  # module files in load order, relative to lib/modules/<version>
    cmdline: str = CMDLINE


INIT = r"""#!/bin/sh
# /init of the cloudland test guest: busybox sh as PID 1, never exits.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var/log /mnt/seed
exec </dev/console >/dev/console 2>&1
ip link set lo up 2>/dev/null

while read -r mod; do
    insmod "/lib/modules/$mod" || echo "CLOUDLAND-GUEST-WARN insmod $mod failed"
done </lib/modules/load-order

# The NoCloud seed: a filesystem labelled cidata, wherever it shows up.
seed=""
tries=0
while [ -z "$seed" ] && [ $tries -lt 150 ]; do
    for dev in $(findfs LABEL=cidata 2>/dev/null) $(findfs LABEL=CIDATA 2>/dev/null) \
            /dev/sr* /dev/vd* /dev/sd*; do
        [ -b "$dev" ] || continue
        if mount -r -t iso9660 "$dev" /mnt/seed 2>/dev/null ||
                mount -r -t vfat "$dev" /mnt/seed 2>/dev/null; then
            if [ -f /mnt/seed/meta-data ]; then
                seed=$dev
                break
            fi
            umount /mnt/seed
        fi
    done
    [ -n "$seed" ] || { sleep 0.1; tries=$((tries + 1)); }
done
[ -n "$seed" ] || echo "CLOUDLAND-GUEST-NOSEED"
meta=/mnt/seed/meta-data
user=/mnt/seed/user-data
[ -f "$meta" ] || meta=/dev/null
[ -f "$user" ] || user=/dev/null
cloud_config=""
head -n 1 "$user" | grep -q '^#cloud-config' && cloud_config=$user

# yaml_scalar KEY FILE: the value of a top-level `KEY: value`, unquoted.
yaml_scalar() {
    sed -n "s/^$1:[[:space:]]*//p" "$2" | head -n 1 | tr -d '\r' |
        sed -e 's/[[:space:]]*$//' -e "s/^[\"']//" -e "s/[\"']\$//"
}

# first_key SECTION FILE: the first OpenSSH public key ("type blob") of a top-level
# section (a list, a mapping or an inline value) of a YAML file.
first_key() {
    awk -v sect="$1" '
        insect && /^[^ \t#-]/ { insect = 0 }
        !insect && index($0, sect ":") == 1 { insect = 1; sub(/^[^:]*:/, "") }
        insect && match($0, /(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+[ \t]+AAAA[A-Za-z0-9+\/]+=*/) {
            print substr($0, RSTART, RLENGTH); exit
        }
    ' "$2"
}

# fingerprint BLOB: OpenSSH's SHA256:<unpadded base64 of the sha256 of the key blob>.
fingerprint() {
    hex=$(printf '%s' "$1" | base64 -d | sha256sum | cut -d' ' -f1)
    printf "SHA256:%s" "$(printf "$(echo "$hex" | sed 's/../\\x&/g')" | base64 | tr -d '=\n')"
}

instance=$(yaml_scalar instance-id "$meta")
host=""
[ -n "$cloud_config" ] && host=$(yaml_scalar hostname "$cloud_config")
[ -n "$host" ] || host=$(yaml_scalar local-hostname "$meta")
[ -n "$host" ] || host=$(yaml_scalar hostname "$meta")
[ -n "$host" ] || host=localhost
hostname "$host"

key=$(first_key public-keys "$meta")
[ -n "$key" ] || key=$(first_key public_keys "$meta")
[ -n "$key" ] || [ -z "$cloud_config" ] || key=$(first_key ssh_authorized_keys "$cloud_config")
fp=""
[ -n "$key" ] && fp=$(fingerprint "$(echo "$key" | awk '{print $2}')")

# libvirt's graceful shutdown presses the ACPI power button: acpid runs
# /etc/acpi/PWRF/00000080, which powers off.
acpid -l /var/log/acpid.log

# DHCP on every ethN, in the background from the start: no lease must not delay READY.
for path in /sys/class/net/eth*; do
    [ -e "$path" ] || continue
    ip link set "${path##*/}" up
    udhcpc -f -O mtu -i "${path##*/}" -s /etc/udhcpc.script >/dev/null 2>&1 &
done

echo "CLOUDLAND-GUEST-READY hostname=$host instance=$instance key=$fp"

if head -n 1 "$user" | grep -q '^#!'; then
    cp "$user" /run/user-data
    chmod 755 /run/user-data
    /run/user-data
fi

# A shell on the serial port for the live console, with ttyS0 as its controlling tty (so ^C works).
# Only once Enter is pressed (busybox init's "askfirst"): an idle prompt would share its line
# with the next report, and every report must start a line of its own.
while :; do
    setsid -c sh -c 'echo "CLOUDLAND-GUEST-CONSOLE press Enter for a shell"; read -r _; exec sh -i' <>/dev/ttyS0 >&0 2>&1
done &

# Report block devices as they come and go (hot-attached volumes).
seen=" "
while :; do
    now=" "
    for path in /sys/block/*; do
        name=${path##*/}
        case "$name" in loop*|ram*|\*) continue ;; esac
        now="$now$name "
        case "$seen" in
            *" $name "*) ;;
            *) echo "CLOUDLAND-GUEST-BLOCK $name" ;;
        esac
    done
    for name in $seen; do
        case "$now" in
            *" $name "*) ;;
            *) echo "CLOUDLAND-GUEST-BLOCK-GONE $name" ;;
        esac
    done
    seen=$now
    sleep 0.2
done
"""

_POWEROFF_SCRIPT = """#!/bin/sh
echo "CLOUDLAND-GUEST-POWEROFF" >/dev/console
sync
poweroff -f
"""

_UDHCPC_SCRIPT = r"""#!/bin/sh
# busybox udhcpc's hook: configure $interface from the lease.
case "$1" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    for r in $router; do
        ip route replace default via "$r" dev "$interface"
        break
    done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "CLOUDLAND-GUEST-IP $interface $ip/${mask:-24} router=${router%% *} mtu=$mtu" >/dev/console
    ;;
esac
exit 0
"""


def build(outdir: Path | str) -> Guest:
    """Build (or reuse) the guest in ``outdir``; see the module docstring."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out / ".lock"):
        deb = _kernel_deb(out)
        key = _inputs_key(deb)
        guest = _reuse(out, key)
        if guest is None:
            guest = _build(out, deb)
            (out / ".inputs").write_text(key + "\n")
        return guest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m localcluster.guest OUTDIR", file=sys.stderr)
        return 2
    guest = build(args[0])
    print(f"kernel  {guest.kernel}  ({guest.kernel_version})")
    print(f"initrd  {guest.initrd}")
    print(f"disk    {guest.disk}")
    print(f"cmdline {guest.cmdline}")
    return 0


# --- inputs -------------------------------------------------------------------------------


def _kernel_deb(out: Path) -> Path:
    """The cached linux-image-6.*-amd64 .deb in ``out``, downloaded if there is none."""
    cached = sorted(out.glob("linux-image-*-amd64_*.deb"))
    if cached:
        return cached[-1]
    package = _kernel_package()
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        _apt(["apt-get", "download", package], cwd=tmp)
        (deb,) = Path(tmp).glob("*.deb")
        return deb.rename(out / deb.name)


def _kernel_package() -> str:
    """The real kernel package that ``linux-image-amd64`` depends on."""
    proc = _apt(["apt-cache", "depends", "--important", KERNEL_META_PACKAGE])
    for line in proc.stdout.splitlines():
        word = line.split(":", 1)
        if len(word) == 2 and word[0].strip() == "Depends":
            name = word[1].strip()
            if name.startswith("linux-image-") and name.endswith("-amd64"):
                return name
    raise RuntimeError(f"no linux-image-*-amd64 among the dependencies of {KERNEL_META_PACKAGE}")


def _apt(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs an apt command, once more after `apt-get update` if it fails."""
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or (argv[0] == "apt-cache" and "Depends" not in proc.stdout):
        subprocess.run(["apt-get", "update"], capture_output=True, check=False)
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


def _inputs_key(deb: Path) -> str:
    if not BUSYBOX.exists():
        raise RuntimeError(f"{BUSYBOX} missing: apt-get install busybox-static")
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(_file_sha256(BUSYBOX).encode())
    h.update(deb.name.encode())
    return h.hexdigest()


def _reuse(out: Path, key: str) -> Guest | None:
    try:
        if (out / ".inputs").read_text().strip() != key:
            return None
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    guest = _guest(out, manifest)
    if not all(p.exists() for p in (guest.kernel, guest.initrd, guest.disk)):
        return None
    return guest


def _guest(out: Path, manifest: Mapping[str, object]) -> Guest:
    modules = manifest["modules"]
    assert isinstance(modules, list)
    return Guest(
        kernel=out / "vmlinuz",
        initrd=out / "initrd.img",
        disk=out / "disk.qcow2",
        kernel_version=str(manifest["kernel_version"]),
        modules=tuple(str(m) for m in modules),
        cmdline=str(manifest["cmdline"]),
    )


# --- build --------------------------------------------------------------------------------


def _build(out: Path, deb: Path) -> Guest:
    with tempfile.TemporaryDirectory(prefix="cloudland-guest-") as tmp:
        root = Path(tmp)
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
        version = vmlinuz.name.removeprefix("vmlinuz-")
        moddir = root / "lib" / "modules" / version
        order = _module_order(moddir, MODULES)
        initrd = _initrd(moddir, order)
        _replace(out / "vmlinuz", vmlinuz.read_bytes())
    _replace(out / "initrd.img", initrd)
    if not (out / "disk.qcow2").exists():
        tmpdisk = out / "disk.qcow2.tmp"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(tmpdisk), DISK_SIZE], check=True
        )
        tmpdisk.rename(out / "disk.qcow2")
    manifest = {"kernel_version": version, "modules": order, "cmdline": CMDLINE}
    _replace(out / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return _guest(out, manifest)


def _module_order(moddir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative to ``moddir``) for ``wanted`` and their deps, deps first."""
    files: dict[str, Path] = {}
    for path in (moddir / "kernel").rglob("*.ko*"):
        files[_modname(path.name)] = path
    builtin = {
        _modname(line.rsplit("/", 1)[-1])
        for line in (moddir / "modules.builtin").read_text().split()
    }
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = _modname(name)
        if name in done or name in builtin:
            return
        if name in chain:
            raise RuntimeError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in files:
            raise RuntimeError(f"kernel module {name} is neither in the package nor built in")
        for dep in _modinfo(files[name]).get("depends", "").split(","):
            if dep:
                visit(dep, chain + (name,))
        done.add(name)
        order.append(str(files[name].relative_to(moddir)))

    for name in wanted:
        visit(name, ())
    return order


def _modname(filename: str) -> str:
    return filename.split(".ko", 1)[0].replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if not path.name.endswith(".ko"):
        raise RuntimeError(f"cannot decompress {path} (busybox insmod needs a plain .ko)")
    return data


def _modinfo(path: Path) -> dict[str, str]:
    """The ``.modinfo`` section of an ELF64 little-endian kernel module."""
    elf = _module_bytes(path)
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise RuntimeError(f"{path}: not an ELF64 little-endian module")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + i * shentsize
        )
        return name, offset, size

    _, stroff, _ = section(shstrndx)
    info: dict[str, str] = {}
    for i in range(shnum):
        name, offset, size = section(i)
        if elf[stroff + name : elf.index(b"\0", stroff + name)] == b".modinfo":
            for entry in elf[offset : offset + size].split(b"\0"):
                k, sep, v = entry.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(k, v)
    return info


def _initrd(moddir: Path, order: list[str]) -> bytes:
    cpio = _Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp",
              "var", "var/log", "mnt", "mnt/seed", "etc", "etc/acpi", "etc/acpi/PWRF", "root",
              "lib", "lib/modules"):
        cpio.dir(d)
    cpio.node("dev/console", stat.S_IFCHR | 0o600, 5, 1)
    cpio.node("dev/null", stat.S_IFCHR | 0o666, 1, 3)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in _applets():
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    cpio.file("init", INIT.encode(), 0o755)
    cpio.file("etc/acpi/PWRF/00000080", _POWEROFF_SCRIPT.encode(), 0o755)
    cpio.file("etc/udhcpc.script", _UDHCPC_SCRIPT.encode(), 0o755)
    cpio.file("etc/hostname", b"localhost\n", 0o644)
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    cpio.file("etc/group", b"root:x:0:\n", 0o644)
    made: set[str] = set()
    for rel in order:
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            d = "lib/modules/" + "/".join(parts[:i])
            if d not in made:
                cpio.dir(d)
                made.add(d)
        plain = rel.split(".ko", 1)[0] + ".ko"
        cpio.file(f"lib/modules/{plain}", _module_bytes(moddir / rel), 0o644)
    load_order = "".join(r.split(".ko", 1)[0] + ".ko\n" for r in order)
    cpio.file("lib/modules/load-order", load_order.encode(), 0o644)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return sorted(set(out.stdout.split()))


class _Cpio:
    """A writer of the "newc" cpio format the kernel unpacks into its initramfs."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._buf.write(header + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, perm: int) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def node(self, name: str, mode: int, major: int, minor: int) -> None:
        self._entry(name, mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, nlink=1)
        return self._buf.getvalue()


# --- helpers ------------------------------------------------------------------------------


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (made if missing): one build of a cache at a time."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


if __name__ == "__main__":
    sys.exit(main())
