"""The scale soak still runs end to end and reports every figure, with nothing lost, run twice or missing
from its host (no rate or latency is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import verdict
from tests.support.leftovers import no_new_processes

pytestmark = pytest.mark.slow

FIGURES = ["startup_s", "load_s", "drain_s", "launches", "deletes", "launches_per_s", "launches_per_hypervisor_per_min",
           "api", "tasks", "agreement", "kills", "cpu_s", "cpu_s_per_launch", "db", "db_per_launch", "at_rest",
           "commit", "machine"]


def test_bench_soak_small_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    repo = Path(__file__).resolve().parent.parent
    with no_new_processes():
        run = subprocess.run([sys.executable, "-m", "bench.soak", "--hypervisors", "12", "--instances", "40",
                              "--rate", "5", "--live", "20", "--chaos-seconds", "3", "--idle-seconds", "1",
                              "--json", str(out)], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    # Orphans left on hosts by clean-ups that could not reach them are a known gap under kills
    # (docs/scale.md): reported, and the run's exit status says so, but not this test's concern.
    assert all(b.startswith("orphan_") for b in verdict(figures)), run.stdout[-3000:] + run.stderr[-3000:]
    assert all(figures.get(k) is not None for k in FIGURES), {k: figures.get(k) for k in FIGURES}
    assert figures["launches"] == 40 and figures["deletes"] > 0
    assert [k["what"] for k in figures["kills"]].count("frontend") == 1
    for kind in ("instance.create", "instance.delete"):
        assert figures["tasks"][kind]["lost"] == 0 and figures["tasks"][kind]["duplicated"] == 0, figures["tasks"]
    agreement = figures["agreement"]
    assert agreement["db_active"] > 0 and agreement["db_ports"] > 0
    assert all(agreement[k] == 0 for k in ("missing_instances", "missing_ports", "port_groups_differ")), agreement
    assert {"frontend", "agents", "sims", "postgres"} <= set(figures["cpu_s_per_launch"])
    assert figures["api"]["p50_s"] is not None and figures["api"]["p99_s"] is not None
