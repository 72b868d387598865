"""Starting one of our daemons with a config file, for the tests of how it refuses to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["run_daemon"]

REPO = Path(__file__).resolve().parents[2]


def run_daemon(module: str, config: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m <module> --config <config>`` from the repository, its output captured.

    For configs it must refuse: a daemon that starts anyway is killed at ``timeout`` and fails
    the test with subprocess.TimeoutExpired.  The timeout only stops a hang: a busy machine may
    take many seconds to import a daemon.
    """
    return subprocess.run([sys.executable, "-m", module, "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
