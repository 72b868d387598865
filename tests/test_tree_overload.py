"""2,000 hosts beside CPU burners: a busy machine makes the tree slower, never wrong.

The benchmark builds the tree (agents and simulated backends as real processes, CURVE on
every link) with BURNERS processes spinning on the cores it needs, and runs every phase:
broadcasts, unicasts, a kill -9 of an agent mid-broadcast, a final broadcast.  No host may
be declared dead while alive, no answer lost, no command run twice, every host answering.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.leftovers import no_new_processes

pytestmark = pytest.mark.slow

HOSTS = 2000
BURNERS = 2


def test_2000_hosts_under_background_load_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "tree.json"
    repo = Path(__file__).resolve().parent.parent
    with no_new_processes():
        run = subprocess.run([sys.executable, "-m", "bench.tree", "--hosts", str(HOSTS), "--rounds", "20",
                              "--background-load", str(BURNERS), "--json", str(out)],
                             cwd=repo, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["background_load"] == BURNERS
    assert figures["false_failures"] == 0, figures["false_failure_examples"]
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["final_ok"] == HOSTS
    assert figures["crashed"] == []
