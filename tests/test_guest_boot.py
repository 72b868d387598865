"""The tiny test guest (localcluster/guest.py) boots under libvirt/QEMU here and does its job.

Straight on libvirt-python, no cloudland code: a transient TCG domain with direct kernel boot,
a qcow2 overlay as its root disk, a NoCloud seed ISO as an IDE cdrom and its serial console
in a file. Checks the READY line (hostname, instance id, SSH key fingerprint), a hot-attached
virtio disk showing up as vdb, and an ACPI shutdown that makes the domain go away.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest

from localcluster import guest as guest_build

CACHE = Path("/var/tmp/cloudland-guest")
BOOT_TIMEOUT = 60.0
ATTACH_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 30.0

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _fake_ed25519_key(comment: str) -> tuple[str, str]:
    """An OpenSSH ed25519 public key line (random point: the guest only hashes it) and its
    fingerprint as `ssh-keygen -l` prints it."""
    def string(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    blob = string(b"ssh-ed25519") + string(os.urandom(32))
    line = f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return line, fp


def _seed_iso(path: Path, meta_data: str, user_data: str) -> None:
    src = path.parent / "seed"
    src.mkdir()
    (src / "meta-data").write_text(meta_data)
    (src / "user-data").write_text(user_data)
    subprocess.run(
        ["genisoimage", "-quiet", "-V", "cidata", "-J", "-r", "-o", str(path),
         str(src / "meta-data"), str(src / "user-data")],
        check=True,
    )


def _domain_xml(name: str, guest: guest_build.Guest, disk: Path, seed: Path,
                serial: Path) -> str:
    return f"""
<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(guest.kernel))}</kernel>
    <initrd>{escape(str(guest.initrd))}</initrd>
    <cmdline>{escape(guest.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(disk))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(str(seed))}/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <serial type='file'>
      <source path={quoteattr(str(serial))}/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path={quoteattr(str(serial))}/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _wait_for_line(serial: Path, prefix: str, dom: Any, timeout: float) -> str:
    """The first line of the serial log that starts with ``prefix``."""
    deadline = time.monotonic() + timeout
    while True:
        text = serial.read_text(errors="replace") if serial.exists() else ""
        for line in text.splitlines():
            if line.startswith(prefix):
                return line
        if time.monotonic() > deadline:
            pytest.fail(f"no {prefix!r} line within {timeout:g} s; serial console:\n{text}")
        if not dom.isActive():
            pytest.fail(f"domain stopped while waiting for {prefix!r}; serial console:\n{text}")
        time.sleep(0.2)


def test_guest_boots_reports_hot_attach_and_shuts_down(libvirt_daemons: None) -> None:
    import libvirt

    if shutil.which("genisoimage") is None:
        pytest.skip("genisoimage missing: run sh scripts/ensure-libvirt.sh")
    guest = guest_build.build(CACHE)

    conn = libvirt.open("qemu:///system")
    name = f"cloudland-test-guest-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="cloudland-guest-test-", dir="/var/tmp"))
    dom = None
    try:
        overlay = work / "root.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(guest.disk),
             str(overlay)],
            check=True,
        )
        volume = work / "volume.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(volume), "16M"], check=True)

        meta_key, meta_fp = _fake_ed25519_key("meta@test")
        user_key, _ = _fake_ed25519_key("user@test")
        instance = f"i-{uuid.uuid4().hex[:12]}"
        hostname = "tiny-guest-1"
        meta_data = (
            f"instance-id: {instance}\n"
            f"local-hostname: {hostname}\n"
            f"public-keys:\n  - {meta_key}\n"
        )
        user_data = f"#cloud-config\nssh_authorized_keys:\n  - {user_key}\n"
        seed = work / "seed.iso"
        _seed_iso(seed, meta_data, user_data)
        serial = work / "serial.log"

        started = time.monotonic()
        dom = conn.createXML(_domain_xml(name, guest, overlay, seed, serial), 0)
        ready = _wait_for_line(serial, guest_build.READY, dom, BOOT_TIMEOUT)
        boot_s = time.monotonic() - started
        fields = dict(f.split("=", 1) for f in ready.split()[1:])
        assert fields == {"hostname": hostname, "instance": instance, "key": meta_fp}, ready
        print(f"guest ready in {boot_s:.1f} s: {ready}")

        disk_xml = f"""
<disk type='file' device='disk'>
  <driver name='qemu' type='qcow2'/>
  <source file={quoteattr(str(volume))}/>
  <target dev='vdb' bus='virtio'/>
</disk>"""
        dom.attachDeviceFlags(disk_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        _wait_for_line(serial, f"{guest_build.BLOCK} vdb", dom, ATTACH_TIMEOUT)

        dom.shutdown()
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        while True:
            try:
                gone = not conn.lookupByName(name).isActive()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                gone = True
            if gone:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"domain still running {SHUTDOWN_TIMEOUT:g} s after an ACPI shutdown; "
                    f"serial console:\n{serial.read_text(errors='replace')}"
                )
            time.sleep(0.2)
        dom = None
    finally:
        try:
            if dom is not None:
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass  # already gone
        finally:
            conn.close()
            shutil.rmtree(work, ignore_errors=True)
