"""The standby frontends' benchmark still runs end to end and reports every figure (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.leftovers import no_new_processes

pytestmark = pytest.mark.slow

FIGURES = ["takeover_leader_p50_s", "takeover_tree_p50_s", "takeover_first_command_p50_s", "takeover_total_p50_s",
           "takeover_cpu_s_p50", "steady_ping_p50_s", "api_during_kills", "launches", "idle_no_tree", "idle_tree",
           "switchover"]


def test_bench_ha_small_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "ha.json"
    repo = Path(__file__).resolve().parent.parent
    with no_new_processes():
        run = subprocess.run([sys.executable, "-m", "bench.ha", "--hosts", "20", "--kills", "1", "--idle-seconds", "2",
                              "--json", str(out)], cwd=repo, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert all(figures.get(k) is not None for k in FIGURES), {k: figures.get(k) for k in FIGURES}
    assert figures["hosts"] == 20 and len(figures["takeovers"]) == 1
    assert figures["takeovers"][0]["first_command_answered"] == 20
    assert figures["launches"]["lost"] == 0 and figures["launches"]["doubled"] == 0
    assert figures["api_during_kills"]["error_rate_after_retry"] == 0
