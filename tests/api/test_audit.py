"""The audit log: every mutating call is recorded with who, what, when and how it ended; admins read it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import text

import clctl.client
from clctl.main import cli
from frontend.api.app import create_app
from frontend.api.routes import flavors as flavor_routes
from frontend.services import Frontend
from tests.api.conftest import ADMIN_PASSWORD, Api, error_of

FLAVOR = {"name": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}


def _audit(admin: Api, **filters: Any) -> list[dict[str, Any]]:
    """The records matching ``filters``, oldest first."""
    return list(reversed(admin.ok("get", "/v1/audit", params=filters)["items"]))


def _last(admin: Api) -> dict[str, Any]:
    return dict(admin.ok("get", "/v1/audit", params={"limit": 1})["items"][0])


def test_a_call_is_recorded_with_who_what_and_how_it_ended(admin: Api) -> None:
    before = dt.datetime.now(dt.timezone.utc)
    flavor = admin.ok("post", "/v1/flavors", 201, json=FLAVOR)
    admin.ok("delete", f"/v1/flavors/{flavor['id']}", 204)
    created, deleted = _audit(admin)[-2:]
    assert created["user_id"] == admin.who["user_id"] and created["user_name"] == "admin"
    assert created["org_id"] == admin.who["org_id"] and created["source"] == "testclient"
    assert (created["method"], created["route"], created["resource_id"], created["status"], created["error"]) == \
        ("POST", "/v1/flavors", None, 201, None)
    assert (deleted["method"], deleted["route"], deleted["resource_id"], deleted["status"]) == \
        ("DELETE", "/v1/flavors/{flavor}", flavor["id"], 204)
    # UTC with its zone, as every time the API answers; a second's slack for the clocks' resolution.
    assert created["created_at"].endswith("Z")
    assert dt.datetime.fromisoformat(created["created_at"]) >= before - dt.timedelta(seconds=1)


def test_refused_calls_and_logins_are_recorded_and_reads_are_not(admin: Api, client: TestClient) -> None:
    reader = admin.tenant("acme", role="reader")
    anonymous = Api(client)
    assert reader.post("/v1/flavors", json=FLAVOR).status_code == 403
    assert anonymous.post("/v1/flavors", json=FLAVOR).status_code == 401
    assert admin.post("/v1/flavors", json={**FLAVOR, "colour": "red"}).status_code == 422
    assert admin.post("/v1/no-such-thing", json={}).status_code == 404
    assert anonymous.post("/v1/tokens", json={"username": "admin", "password": "wrong"}).status_code == 401
    assert anonymous.post("/v1/tokens", json={"username": "nobody", "password": "wrong"}).status_code == 401
    admin.ok("get", "/v1/flavors")
    records = _audit(admin)
    assert [(r["method"], r["route"], r["status"], r["error"], r["user_name"]) for r in records] == [
        ("POST", "/v1/tokens", 201, None, "admin"),  # the fixture's login
        ("POST", "/v1/orgs", 201, None, "admin"),
        ("POST", "/v1/users", 201, None, "admin"),
        ("POST", "/v1/tokens", 201, None, "acme-user"),
        ("POST", "/v1/flavors", 403, "forbidden", "acme-user"),
        ("POST", "/v1/flavors", 401, "unauthenticated", None),
        ("POST", "/v1/flavors", 422, "invalid", "admin"),
        # no route was reached: the path itself stands for it
        ("POST", "/v1/no-such-thing", 404, "not_found", None),
        # a failed login names the account it tried, if that account exists
        ("POST", "/v1/tokens", 401, "unauthenticated", "admin"),
        ("POST", "/v1/tokens", 401, "unauthenticated", None),
    ]
    assert records[4]["org_id"] == reader.who["org_id"]
    assert records[5]["user_id"] is None and records[5]["org_id"] is None
    assert "wrong" not in json.dumps(records) and ADMIN_PASSWORD not in json.dumps(records)


def test_filters_and_limit(admin: Api) -> None:
    boss = admin.tenant("acme")
    admin.ok("post", "/v1/flavors", 201, json=FLAVOR)
    assert boss.post("/v1/flavors", json={**FLAVOR, "name": "other"}).status_code == 403
    boss.ok("post", "/v1/keypairs", 201, json={"name": "k", "public_key": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8oVb0k7nXh1k7JfF6QY3J2m4bGvT3Q0C3bX2m1Bz0 me@host")})
    boss.ok("delete", "/v1/keypairs/k", 204)

    by_boss = _audit(admin, user="acme-user")
    assert [(r["method"], r["route"]) for r in by_boss] == [
        ("POST", "/v1/tokens"), ("POST", "/v1/flavors"), ("POST", "/v1/keypairs"), ("DELETE", "/v1/keypairs/{keypair}")]
    assert _audit(admin, user=boss.who["user_id"]) == by_boss
    assert [r["route"] for r in _audit(admin, method="DELETE")] == ["/v1/keypairs/{keypair}"]
    assert [r["user_name"] for r in _audit(admin, status=403)] == ["acme-user"]
    assert [r["route"] for r in _audit(admin, path_prefix="/v1/keypairs")] == ["/v1/keypairs", "/v1/keypairs/{keypair}"]
    assert _audit(admin, path_prefix="/v1/key%") == []  # a prefix, not a pattern
    assert len(_audit(admin, limit=2)) == 2 and _audit(admin, limit=2)[-1] == _last(admin)
    latest = _last(admin)["created_at"]
    assert [r["created_at"] for r in _audit(admin, since=latest)] == [latest]
    assert _audit(admin, since=(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()) == []
    for bad in ({"method": "HEAD"}, {"status": 42}, {"limit": 0}):
        response = admin.get("/v1/audit", params=bad)
        assert response.status_code == 422, bad


def test_only_admins_read_the_audit_log(admin: Api) -> None:
    boss = admin.tenant("acme")
    response = boss.get("/v1/audit")
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"


def test_a_crash_is_recorded_as_an_internal_error(frontend: Frontend, admin: Api,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(flavor_routes, "unique_name", crash)
    with TestClient(create_app(frontend), raise_server_exceptions=False) as client:
        response = Api(client, admin.token).post("/v1/flavors", json=FLAVOR)
    assert response.status_code == 500 and error_of(response)["code"] == "internal"
    record = _last(admin)
    assert (record["route"], record["status"], record["error"], record["user_name"]) == \
        ("/v1/flavors", 500, "internal", "admin")


def test_a_failed_audit_write_is_logged_and_the_call_still_succeeds(frontend: Frontend, admin: Api) -> None:
    with frontend.db.transaction() as session:
        session.execute(text("DROP TABLE audit_log"))
    with structlog.testing.capture_logs() as logs:
        admin.ok("post", "/v1/flavors", 201, json=FLAVOR)
    failed = [e for e in logs if e["event"] == "audit_write_failed"]
    assert len(failed) == 1 and failed[0]["route"] == "/v1/flavors" and failed[0]["status"] == 201
    assert admin.ok("get", "/v1/flavors/small")["name"] == "small"


def test_clctl_audit_list(frontend: Frontend, admin: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app = create_app(frontend)
    monkeypatch.setattr(clctl.client, "http_client", lambda *_args, **_kwargs: TestClient(app))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDLAND_ENDPOINT", "http://cloud.test:8080")
    monkeypatch.setenv("CLOUDLAND_TOKEN", admin.token or "")
    reader = admin.tenant("acme", role="reader")
    assert reader.post("/v1/flavors", json=FLAVOR).status_code == 403

    def run(*args: str) -> str:
        with structlog.testing.capture_logs():  # the app's logs would land in clctl's output
            result = CliRunner().invoke(cli, list(args), prog_name="clctl")
        assert result.exit_code == 0, result.output
        return result.stdout

    listed = json.loads(run("audit", "list", "--json", "--user", "acme-user", "--status", "403", "--since", "1h"))
    assert [(r["route"], r["error"]) for r in listed["items"]] == [("/v1/flavors", "forbidden")]
    table = run("audit", "list", "--method", "post", "--path-prefix", "/v1/orgs").splitlines()
    assert table[0].split() == ["TIME", "USER", "SOURCE", "METHOD", "ROUTE", "RESOURCE", "STATUS", "ERROR",
                                "FRONTEND"]
    assert len(table) == 2 and "/v1/orgs" in table[1] and "201" in table[1]
