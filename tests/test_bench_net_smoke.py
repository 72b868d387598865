"""The network benchmark still runs end to end (``--quick``), reports every figure beside its
reference and leaves no namespace or process behind (no timing is asserted)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.leftovers import no_new_processes

pytestmark = [pytest.mark.slow, pytest.mark.root]

FIGURES = [
    # 1. throughput, VXLAN beside a plain veth and a same-host bridge
    "vxlan_veth_ratio", "vxlan_gbps", "veth_gbps", "bridge_gbps", "vxlan_cpu_s_per_gb", "veth_cpu_s_per_gb",
    "vxlan_veth_cpu_ratio",
    # 2. wiring and unwiring ports, beside bare veth creations and deletions
    "ports_wire_p50_s", "ports_wire_p90_s", "ports_wire_wall_s", "ports_wire_cpu_s", "ports_unwire_p50_s",
    "ports_unwire_p90_s", "ports_unwire_wall_s", "ports_unwire_cpu_s", "ports_reference_create_p50_s",
    "ports_reference_create_wall_s", "ports_reference_create_cpu_s", "ports_reference_delete_p50_s",
    # 3. port created -> first ping, beside a plain veth
    "ping_create_to_ping_p50_s", "ping_sync_both_p50_s", "ping_first_port_on_host_ping_s",
    "ping_reference_veth_to_ping_p50_s",
    # 4. FDB fan-out, beside bare netlink entries
    "fanout_add_port_p50_s", "fanout_add_port_cpu_s_per_sync", "fanout_full_p50_s", "fanout_full_cpu_s_per_sync",
    "fanout_removal_p50_s", "fanout_reference_bare_add_p50_s", "fanout_reference_bare_full_p50_s",
]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_bench_net_quick_run_reports_every_figure(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    if shutil.which("iperf3") is None or shutil.which("dnsmasq") is None:
        pytest.skip("iperf3 or dnsmasq missing: run sh scripts/ensure-test-tools.sh")
    out = tmp_path / "net.json"
    repo = Path(__file__).resolve().parent.parent
    with no_new_processes():
        run = subprocess.run([sys.executable, "-m", "bench.net", "--quick", "--json", str(out)], cwd=repo,
                             capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    missing = {k: figures.get(k) for k in FIGURES if not _number(figures.get(k))}
    assert not missing, missing
    assert figures["kernel"] and figures["date"] and figures["units"]
    assert figures["ports"]["ports"] == figures["ports"]["wire"]["n"] == figures["ports"]["unwire"]["n"] == 20
    assert figures["ping"]["unanswered"] == 0 and figures["ping"]["reference_unanswered"] == 0
    base = figures["throughput"]["runs"][0]
    assert base["variant"] == "base" and base["guest_mtu"] == base["underlay_mtu"] - 50
    assert "VXLAN/veth" in run.stdout and "reference" in run.stdout

    # Nothing of the run's lab is left: no namespace (hypervisors, instances, routers, guests).
    left = [n for n in os.listdir("/run/netns") if n.startswith(figures["lab"] + "-")] \
        if os.path.isdir("/run/netns") else []
    assert not left, left
