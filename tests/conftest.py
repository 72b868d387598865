"""Fixtures shared across the test packages."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from localcluster import libvirtd


@pytest.fixture(scope="session")
def libvirt_daemons() -> Iterator[None]:
    """libvirtd for the tests that boot real guests: started once if need be, stopped after the run."""
    if os.geteuid() != 0:
        pytest.skip("needs root: starts libvirtd and QEMU guests on qemu:///system")
    pytest.importorskip("libvirt", reason="libvirt-python is not installed (make installs it)")
    if not libvirtd.qemu_available():
        pytest.skip("libvirt/QEMU missing: run sh scripts/ensure-libvirt.sh")
    with libvirtd.running():
        yield
