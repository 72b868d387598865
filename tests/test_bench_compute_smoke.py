"""The compute benchmark still runs end to end on a real hypervisor, reports every figure and
leaves nothing behind (no timing is asserted).

Checks of what is left use libvirt-python and the process table, never ``virsh``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from localcluster import libvirtd
from tests.support.leftovers import no_new_processes

pytestmark = [pytest.mark.slow, pytest.mark.root]

MODES = {"guest", "control", "floor"}
FIGURES = ["launches", "wall_s", "per_min", "launch_only_per_min", "latency_p50_s", "latency_p95_s",
           "create_p50_s", "delete_p50_s", "cpu_s_per_launch", "teardown_cpu_s_per_launch",
           "machine_cpu_s_per_launch", "cpu_cores_busy", "machine_cores_busy"]
ROLES = {"bench", "libvirtd", "virtlogd", "qemu"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_bench_compute_one_launch_per_mode_reports_every_figure(tmp_path: Path, libvirt_daemons: None) -> None:
    import libvirt

    out = tmp_path / "compute.json"
    repo = Path(__file__).resolve().parent.parent
    with no_new_processes():
        run = subprocess.run([sys.executable, "-m", "bench.compute", "--concurrency", "1", "--launches", "1",
                              "--modes", "guest,control,floor", "--json", str(out)],
                             cwd=repo, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())

    levels = {lv["mode"]: lv for lv in figures["levels"]}
    assert set(levels) == MODES and len(figures["levels"]) == 3
    for mode, level in levels.items():
        assert level["concurrency"] == 1 and level["launches"] == 1 and level["failed"] == 0, level
        missing = {k: level.get(k) for k in FIGURES if not _number(level.get(k))}
        assert not missing, (mode, missing)
        by_role = level["cpu_s_per_launch_by_role"]
        assert set(by_role) == ROLES and all(_number(v) for v in by_role.values()), (mode, by_role)
    assert _number(levels["guest"]["ready_via_driver_p50_s"])
    assert figures["claim_per_min"] == 50 and figures["cleanup_problems"] == []
    assert "floor" in run.stdout and "Cloudland claims" in run.stdout

    # Nothing of the run is left: no domain, no pool, no files, no process.
    run_dir, floor_prefix = figures["run_dir"], figures["floor_prefix"]
    conn = libvirt.open(libvirtd.URI)
    try:
        domains = [d.name() for d in conn.listAllDomains(0)
                   if d.name().startswith(floor_prefix) or run_dir in d.XMLDesc(0)]
        pools = [p.name() for p in conn.listAllStoragePools(0) if p.name() == figures["pool"]]
    finally:
        conn.close()
    assert not domains and not pools, (domains, pools)
    assert not Path(run_dir).exists()
    processes = [p.pid for p in psutil.process_iter(["cmdline"])
                 if any(run_dir in arg or floor_prefix in arg for arg in p.info["cmdline"] or ())]
    assert not processes, processes
