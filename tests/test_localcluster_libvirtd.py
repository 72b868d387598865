"""What a local cloud leaves in the shared libvirtd when it stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.compute.hypervisor import pool_xml
from localcluster import libvirtd

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_a_stopped_cloud_frees_its_pool_names_and_keeps_their_files(libvirt_daemons: None, tmp_path: Path) -> None:
    """``make run`` then ``make test`` on one machine: the suite's backends are named as the
    local cloud's, and found their pool names taken by its pools (``cloudland-host000`` "is at
    .run/backends/host000/pool, not at the configured compute.pool_dir")."""
    import libvirt

    ours, theirs = tmp_path / "run" / "pool", tmp_path / "elsewhere" / "pool"
    conn = libvirt.open(libvirtd.URI)
    try:
        pools = []
        for name, where in (("cloudland-test-ours", ours), ("cloudland-test-theirs", theirs)):
            pool = conn.storagePoolDefineXML(pool_xml(name, where), 0)
            pool.build(0)
            pool.create(0)
            pools.append(pool)
        (ours / "disk.qcow2").write_bytes(b"kept")
        try:
            assert libvirtd.release_pools_under(tmp_path / "run") == 1
            names = {p.name() for p in conn.listAllStoragePools(0)}
            assert "cloudland-test-ours" not in names and "cloudland-test-theirs" in names
            assert (ours / "disk.qcow2").read_bytes() == b"kept"
            # the backend's next start defines it again over the same files
            again = conn.storagePoolDefineXML(pool_xml("cloudland-test-ours", ours), 0)
            again.build(0)
            again.create(0)
            assert again.listVolumes() == ["disk.qcow2"]
        finally:
            libvirtd.purge_under(tmp_path)
    finally:
        conn.close()
