"""The tree benchmark still runs end to end and reports every figure (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.leftovers import no_new_processes

pytestmark = pytest.mark.slow

FIGURES = ["hosts", "bcast_p50_s", "bcast_p99_s", "flat_p50_s", "unicast_per_s", "recover_s", "false_failures",
           "cpu_s_per_round", "lost", "duplicated", "scrape_p50_s", "scrape_series", "status_query_p50_s", "rebalance_s"]


def test_bench_tree_small_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "tree.json"
    repo = Path(__file__).resolve().parent.parent
    with no_new_processes():
        run = subprocess.run([sys.executable, "-m", "bench.tree", "--hosts", "40", "--rounds", "20",
                              "--reference", "counters-off", "--reference", "curve-off", "--json", str(out)], cwd=repo, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert all(figures.get(k) is not None for k in FIGURES), {k: figures.get(k) for k in FIGURES}
    assert figures["hosts"] == 40
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["false_failures"] == 0
    assert figures["curve"] is True
    for name in ("reference_counters_off", "reference_curve_off"):
        assert figures[name]["bcast_p50_s"] is not None and "error" not in figures[name], name
