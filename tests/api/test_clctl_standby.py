"""clctl against a real standby frontend: what the standby refuses with ``not_leading`` goes on to
the next endpoint, and what it serves (a write) is answered there and sent nowhere else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import structlog.testing
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

import clctl.client
from clctl.main import cli
from frontend.api.app import create_app
from frontend.bootstrap import bootstrap
from frontend.services import Frontend
from sci import TreeRoot, TreeSettings
from tests.api.conftest import ADMIN_PASSWORD, Api, make_frontend

STANDBY = "http://standby.test:8080"
LEADER = "http://leader.test:8080"
TREE = {"nodes": [{"node_id": "root", "role": "root", "parent": None, "children": 0, "heartbeat_age": 0.1,
                   "state": "up"}]}


def run(*args: str, env: dict[str, str | None]) -> Result:
    with structlog.testing.capture_logs():  # the app's logs would land in clctl's output
        return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def standby(db_url: str, tmp_path: Path) -> Iterator[Frontend]:
    """A frontend as the daemon builds one before it is elected: its root not started, no generation."""
    frontend = make_frontend(db_url, tmp_path / "frontend", tree=TreeRoot("tcp://127.0.0.1:0", TreeSettings()))
    bootstrap(frontend.db, frontend.data_dir, ADMIN_PASSWORD)
    frontend.tasks.hand_over = lambda task_id: None
    yield frontend
    frontend.tasks.stop()
    frontend.db.dispose()


def test_clctl_moves_on_from_a_standby_only_for_what_it_refuses(standby: Frontend, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    app = create_app(standby)
    leader_calls: list[str] = []

    def leader(request: httpx.Request) -> httpx.Response:
        leader_calls.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json=TREE)

    def connect(endpoint: str, timeout: httpx.Timeout, ca_file: str | None) -> httpx.Client:
        if endpoint == STANDBY:
            return TestClient(app)
        return httpx.Client(base_url=endpoint, transport=httpx.MockTransport(leader))

    monkeypatch.setattr(clctl.client, "http_client", connect)
    with TestClient(app) as client:
        token = Api(client).login("admin", ADMIN_PASSWORD).token
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": None, "CLOUDLAND_TOKEN": token,
           "CLOUDLAND_ENDPOINT": f"{STANDBY},{LEADER}"}

    result = run("--json", "tree", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == TREE and leader_calls == ["GET /v1/tree"]

    (tmp_path / ".config" / "cloudland" / "clctl.last-endpoint").unlink()  # start at the standby again
    result = run("--json", "flavor", "create", "small", "--vcpus", "1", "--memory-mb", "128", "--disk-gb", "1",
                 env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "small"
    assert leader_calls == ["GET /v1/tree"]  # the standby served the write; nothing went elsewhere
