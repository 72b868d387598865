"""Domain type detection: kvm only where /dev/kvm really runs a guest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backend.compute import kvm


def test_detect_answers_quickly() -> None:
    started = time.monotonic()
    assert kvm.detect() in ("kvm", "qemu")
    assert time.monotonic() - started < 2 * kvm.PROBE_TIMEOUT_S + 1


def test_no_device_means_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kvm, "KVM_DEVICE", tmp_path / "kvm")
    assert kvm.detect() == "qemu"


def test_without_hardware_virtualization_means_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """kvm_pvm (say) behind /dev/kvm: no probe is trusted, stock guests hang there."""
    (tmp_path / "kvm_pvm").mkdir()
    monkeypatch.setattr(kvm, "SYS_MODULES", tmp_path)
    assert kvm.detect() == "qemu"


def test_a_device_that_is_no_kvm_fails_the_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The probe itself: /dev/null takes no KVM ioctl, so the child fails and the answer is qemu."""
    (tmp_path / "kvm_intel").mkdir()
    monkeypatch.setattr(kvm, "SYS_MODULES", tmp_path)
    monkeypatch.setattr(kvm, "KVM_DEVICE", Path("/dev/null"))
    assert kvm.detect() == "qemu"


def test_ioctl_numbers_are_linuxs() -> None:
    assert (kvm.KVM_GET_API_VERSION, kvm.KVM_CREATE_VM, kvm.KVM_CREATE_VCPU, kvm.KVM_RUN) == (
        0xAE00, 0xAE01, 0xAE41, 0xAE80)
    assert kvm.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert (kvm.KVM_SET_REGS, kvm.KVM_GET_SREGS, kvm.KVM_SET_SREGS) == (0x4090AE82, 0x8138AE83, 0x4138AE84)


def test_resolve() -> None:
    assert kvm.resolve("kvm") == "kvm" and kvm.resolve("qemu") == "qemu"
    assert kvm.resolve("auto") in ("kvm", "qemu")
    with pytest.raises(ValueError, match="auto, kvm or qemu"):
        kvm.resolve("xen")
