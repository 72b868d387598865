"""clctl as a real process against the API served over HTTP by uvicorn (on SQLite)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import structlog.testing
import uvicorn

from frontend.api.app import create_app
from frontend.bootstrap import bootstrap
from tests.api.conftest import ADMIN_PASSWORD, make_frontend


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API on a loopback port of its own, until the test ends."""
    monkeypatch.setenv("CLOUDLAND_ADMIN_PASSWORD", ADMIN_PASSWORD)
    with structlog.testing.capture_logs():
        fe = make_frontend(f"sqlite:///{tmp_path / 'state.db'}", tmp_path / "frontend")
        bootstrap(fe.db, fe.data_dir)
        # Bound here and handed over, so no other process can take the port in between.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(fe), log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
            fe.tasks.stop()
            fe.db.dispose()


def clctl(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLAND_") and k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "clctl", *args], input=input, env=env, capture_output=True,
                          text=True, timeout=60, cwd=home)


@pytest.mark.slow
def test_login_then_create_and_list_flavors(endpoint: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    login = clctl(home, "login", "--endpoint", endpoint, "--username", "admin", "--password-stdin",
                  input=ADMIN_PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    config = home / ".config" / "cloudland" / "clctl.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    create = clctl(home, "flavor", "create", "small", "--vcpus", "2", "--memory-mb", "2048", "--disk-gb", "20")
    assert create.returncode == 0, create.stderr
    listed = clctl(home, "flavor", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    flavors = json.loads(listed.stdout)["items"]
    assert [(f["name"], f["vcpus"], f["memory_mb"], f["disk_gb"]) for f in flavors] == [("small", 2, 2048, 20)]

    again = clctl(home, "flavor", "create", "small", "--vcpus", "1", "--memory-mb", "512", "--disk-gb", "1")
    assert again.returncode == 1 and "exists already" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
def test_unreachable_api_exits_3(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bind one, then let it go
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = clctl(tmp_path, "--endpoint", f"http://127.0.0.1:{port}", "--token", "t", "flavor", "list")
    assert run.returncode == 3
    assert "cannot reach the API" in run.stderr and "Traceback" not in run.stderr and run.stdout == ""
