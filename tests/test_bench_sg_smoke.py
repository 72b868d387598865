"""The security-group benchmark still runs end to end on namespace hypervisors, reports every
figure and leaves no namespace behind (no timing is asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import netns

from tests.support.leftovers import no_new_processes

pytestmark = [pytest.mark.slow, pytest.mark.root]

FIGURES = ["apply_first_wall_s", "apply_first_cpu_s", "apply_reapply_wall_s", "apply_reapply_cpu_s",
           "apply_restarted_reapply_wall_s", "apply_one_port_change_wall_s", "apply_one_port_change_cpu_s",
           "apply_reference_append_wall_s", "apply_reference_append_cpu_s", "group_apply_p50_s",
           "group_apply_max_s", "group_connect_after_change_s", "group_reference_ipset_add_p50_s",
           "rules_gbps", "none_gbps", "rules_none_ratio"]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_bench_sg_quick_run_reports_every_figure(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, iptables")
    out = tmp_path / "sg.json"
    repo = Path(__file__).resolve().parent.parent
    before = set(netns.listnetns())
    with no_new_processes():
        run = subprocess.run([sys.executable, "-m", "bench.sg", "--quick", "--json", str(out)], cwd=repo,
                             capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    missing = {k: figures.get(k) for k in FIGURES if not _number(figures.get(k))}
    assert not missing, missing
    assert figures["group_refused_before"] is True
    assert figures["quick"] is True and figures["kernel"] and figures["date"] and figures["units"]
    for section in ("apply", "group", "throughput"):
        assert "error" not in figures[section], figures[section]
    assert not [n for n in netns.listnetns() if n not in before and n.startswith(figures["lab"])]
