"""A guard for tests that must show code starts no process: every way to start one fails loudly.

    attempts = forbid_processes(monkeypatch)
    ...                      # anything that tries raises AssertionError, and is listed
    assert attempts == []    # in case the code swallowed the AssertionError
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Callable

import pytest

__all__ = ["forbid_processes"]

_OS_CALLS = ("system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve", "execvp",
             "execvpe", "spawnv", "spawnve", "spawnvp", "spawnvpe")


def forbid_processes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch ``subprocess.Popen`` (under ``subprocess.run``, ``os.popen`` and asyncio's subprocesses)
    and the ``os`` calls that start or replace processes; return the list that names each attempt."""
    attempts: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def starting(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}{args!r}")
            raise AssertionError(f"tried to start a process: {name}{args!r}")
        return starting

    monkeypatch.setattr(subprocess, "Popen", refuse("subprocess.Popen"))
    for name in _OS_CALLS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"os.{name}"))
    for start in (lambda: subprocess.run(["true"], check=False), lambda: os.system("true")):  # the guard is live
        with pytest.raises(AssertionError, match="tried to start a process"):
            start()
    attempts.clear()
    return attempts
