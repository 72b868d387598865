"""Every package is checked with mypy --strict (configured in pyproject.toml): types are the contracts
between the tree, the frontend, the backends and clctl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_packages_pass_mypy_strict() -> None:
    repo = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-m", "mypy"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
