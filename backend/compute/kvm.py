"""Which domain type this host can run: ``kvm`` (hardware virtualization) or ``qemu`` (TCG emulation).

/dev/kvm existing proves little.  ``detect`` wants two things:

- hardware virtualization behind it (the kvm_intel or kvm_amd module).  Some sandboxes offer
  /dev/kvm through kvm_pvm, whose guests must be PVM-enabled kernels: it runs a probe like the
  one below, and SeaBIOS, but a stock Linux guest hangs early in boot;
- a guest that really runs: in a forked child, a VM with one page of memory holding ``hlt``,
  one vCPU in real mode at address 0, and one KVM_RUN that must come back with exit reason
  HLT within the timeout (nested setups without working VMX hang or fail there).

Anything else is ``qemu``: slow, but it boots anywhere.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import select
import signal
import struct
import time
from pathlib import Path

import structlog

from .domain import DomainType

__all__ = ["KVM_DEVICE", "detect", "resolve"]

log = structlog.get_logger("backend.compute")

#: read at each call, so a test can point them elsewhere
KVM_DEVICE = Path("/dev/kvm")
SYS_MODULES = Path("/sys/module")
_HARDWARE_MODULES = ("kvm_intel", "kvm_amd")
PROBE_TIMEOUT_S = 2.0

# <linux/kvm.h>, x86_64.  _IO/_IOR/_IOW as in <asm-generic/ioctl.h>: dir << 30 | size << 16 | type << 8 | nr.
_KVMIO = 0xAE
_WRITE, _READ = 1, 2
_MEMORY_REGION_SIZE = 32  # struct kvm_userspace_memory_region: u32 slot, u32 flags, u64 gpa, u64 size, u64 hva
_REGS_SIZE = 144  # struct kvm_regs: 18 u64, rip at index 16, rflags at 17
_SREGS_SIZE = 312  # struct kvm_sregs: 8 segments of 24 bytes (cs first: u64 base, u32 limit, u16 selector...)


def _ioctl(direction: int, nr: int, size: int = 0) -> int:
    return direction << 30 | size << 16 | _KVMIO << 8 | nr


KVM_GET_API_VERSION = _ioctl(0, 0x00)
KVM_CREATE_VM = _ioctl(0, 0x01)
KVM_GET_VCPU_MMAP_SIZE = _ioctl(0, 0x04)
KVM_CREATE_VCPU = _ioctl(0, 0x41)
KVM_SET_USER_MEMORY_REGION = _ioctl(_WRITE, 0x46, _MEMORY_REGION_SIZE)
KVM_RUN = _ioctl(0, 0x80)
KVM_SET_REGS = _ioctl(_WRITE, 0x82, _REGS_SIZE)
KVM_GET_SREGS = _ioctl(_READ, 0x83, _SREGS_SIZE)
KVM_SET_SREGS = _ioctl(_WRITE, 0x84, _SREGS_SIZE)
KVM_API_VERSION = 12
KVM_EXIT_HLT = 5
_EXIT_REASON_OFFSET = 8  # struct kvm_run: u8 request_interrupt_window, u8 immediate_exit, u8 pad[6], u32 exit_reason
_HLT = 0xF4
_PAGE = 0x1000


def resolve(setting: str) -> DomainType:
    """The domain type for the config's ``compute.domain_type``: kvm, qemu, or auto (``detect``)."""
    if setting == "kvm":
        return "kvm"
    if setting == "qemu":
        return "qemu"
    if setting == "auto":
        return detect()
    raise ValueError(f"compute.domain_type must be auto, kvm or qemu, not {setting!r}")


def detect() -> DomainType:
    device = KVM_DEVICE
    if not device.exists():
        log.info("domain_type_detected", domain_type="qemu", reason=f"no {device}")
        return "qemu"
    if not any((SYS_MODULES / module).is_dir() for module in _HARDWARE_MODULES):
        log.info("domain_type_detected", domain_type="qemu", reason=f"{device} is not backed by kvm_intel or kvm_amd")
        return "qemu"
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, it leaves through _exit and runs no Python cleanup
        code = 1
        try:
            code = 0 if _probe(str(device)) else 1
        finally:
            os._exit(code)
    reason = _wait(pid)
    domain_type: DomainType = "kvm" if reason == "ok" else "qemu"
    log.info("domain_type_detected", domain_type=domain_type, reason=reason,
             seconds=round(time.monotonic() - started, 3))
    return domain_type


def _wait(pid: int) -> str:
    """How the probe child ended: "ok", "failed" or "timed out" (it is then killed)."""
    pidfd = os.pidfd_open(pid)
    try:
        if select.select([pidfd], [], [], PROBE_TIMEOUT_S)[0]:
            _, status = os.waitpid(pid, 0)
            return "ok" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        os.kill(pid, signal.SIGKILL)
        # A vCPU stuck in the kernel may take a moment to die; never block the backend's start on it.
        if select.select([pidfd], [], [], PROBE_TIMEOUT_S)[0]:
            os.waitpid(pid, 0)
        return "timed out"
    finally:
        os.close(pidfd)


def _probe(device: str) -> bool:
    """Run ``hlt`` at guest address 0 in a fresh VM; True if KVM_RUN exits with HLT."""
    kvm = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    if fcntl.ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION:
        return False
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, _PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    memory[0] = _HLT
    host_address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("=IIQQQ", 0, 0, 0, _PAGE, host_address))
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run = mmap.mmap(vcpu, fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), flags=mmap.MAP_SHARED,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE)
    # A vCPU starts at the reset vector (cs base 0xffff0000); real mode with cs base 0 runs address 0.
    sregs = bytearray(_SREGS_SIZE)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs, True)
    struct.pack_into("=QIH", sregs, 0, 0, 0xFFFF, 0)  # cs: base, limit, selector
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = bytearray(_REGS_SIZE)
    struct.pack_into("=QQ", regs, 16 * 8, 0, 0x2)  # rip 0; rflags: bit 1 is reserved and always set
    fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
    fcntl.ioctl(vcpu, KVM_RUN, 0)
    exit_reason: int = struct.unpack_from("=I", run, _EXIT_REASON_OFFSET)[0]
    return exit_reason == KVM_EXIT_HLT
