"""The audit log says which frontend served each call, in the API and in ``clctl audit``."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import clctl.client
from clctl.main import cli
from frontend.leadership import holder_id
from frontend.services import Frontend
from tests.api.conftest import Api

FLAVOR = {"name": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}


def test_each_record_names_the_frontend_that_served_it(frontend: Frontend, client: TestClient, admin: Api,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    admin.ok("post", "/v1/flavors", 201, json=FLAVOR)
    refused = admin.post("/v1/flavors", json=FLAVOR)
    assert refused.status_code == 409
    served_by = holder_id(frontend.config.node_id)  # as the frontends registry names this process
    records = admin.ok("get", "/v1/audit", params={"path_prefix": "/v1/flavors"})["items"]
    assert [(r["status"], r["frontend"]) for r in records] == [(409, served_by), (201, served_by)]

    monkeypatch.setattr(clctl.client, "http_client", lambda endpoint, timeout, ca_file: TestClient(client.app))
    result = CliRunner().invoke(cli, ["audit", "list", "--path-prefix", "/v1/flavors"],
                                env={"CLOUDLAND_TOKEN": admin.token, "CLOUDLAND_ENDPOINT": "http://cloud.test"})
    assert result.exit_code == 0, result.output
    header, *rows = [line.split() for line in result.stdout.splitlines()]
    assert header[-1] == "FRONTEND" and len(rows) == 2
    assert all(row[-1] == served_by for row in rows)
