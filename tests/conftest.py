"""Fixtures shared across the test packages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from localcluster import cloudimage, libvirtd

#: where the Debian cloud image is built once and kept across runs (a few minutes to build)
CLOUD_IMAGE_CACHE = Path("/var/tmp/cloudland-cloud-image")


# First: xdist's own hook reads the groups off the items to name them in their node ids.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs two workers): a file's tests on one worker, and every
    file that needs libvirtd on the same one.

    A file's tests share module fixtures (a cloud, a lab) that a second worker would build
    again.  Each worker has its own session: a second one would find the first one's libvirtd
    running, use it, and lose it when the first one's session ends and stops it.
    """
    libvirt_files = {item.path for item in items if "libvirt_daemons" in getattr(item, "fixturenames", ())}
    for item in items:
        item.add_marker(pytest.mark.xdist_group("libvirt" if item.path in libvirt_files
                                                else item.nodeid.partition("::")[0]))


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


@pytest.fixture(scope="session")
def cloud_image(libvirt_daemons: None) -> cloudimage.CloudImage:
    """The stock Debian cloud image (``localcluster/cloudimage.py``), built once, cached on disk."""
    return cloudimage.build(CLOUD_IMAGE_CACHE)
