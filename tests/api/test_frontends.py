"""The frontends registry: every frontend, standby or leader, is listed with its role and when it
was last heard of; gone ones are shown as such and forgotten after a day; admins only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import text

import clctl.client
from clctl.main import cli
from frontend.leadership import RENEW_S, Lease, Leadership, SingleFrontendLock, holder_id
from frontend.registry import forget_long_gone
from frontend.services import Frontend
from tests.api.conftest import Api
from tests.support.waiting import until


def listed(admin: Api) -> dict[str, dict[str, object]]:
    return {f["holder"]: f for f in admin.ok("get", "/v1/frontends")["items"]}


def age_rows(frontend: Frontend, holder: str, interval: str) -> None:
    with frontend.db.engine.begin() as conn:
        ago = "now() - interval '%s'" % interval if not frontend.db.is_sqlite else "datetime('now', '-%s')" % interval
        conn.execute(text(f"UPDATE frontends SET last_seen = {ago} WHERE holder = :holder"), {"holder": holder})


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_every_frontend_registers_with_each_lease_attempt(frontend: Frontend, admin: Api) -> None:
    a = Lease(frontend.db, "fe-a@h:1", lease_s=60.0, api_url="https://a.test:8080")
    b = Lease(frontend.db, "fe-b@h:2", lease_s=60.0, api_url="https://b.test:8080")
    assert a.take_or_extend() == 1 and b.take_or_extend() is None
    found = admin.ok("get", "/v1/frontends")["items"]
    assert [f["holder"] for f in found] == ["fe-a@h:1", "fe-b@h:2"]  # the leader first
    first, second = found
    assert (first["node_id"], first["role"], first["generation"], first["api_url"], first["status"]) == \
        ("fe-a", "leader", 1, "https://a.test:8080", "up")
    assert (second["role"], second["generation"], second["status"]) == ("standby", None, "up")
    assert 0 <= first["seen_age_s"] < 5 and first["started_at"] <= first["last_seen"]

    a.release(1)
    assert b.take_or_extend() == 2 and a.take_or_extend() is None
    now = listed(admin)
    assert (now["fe-b@h:2"]["role"], now["fe-b@h:2"]["generation"]) == ("leader", 2)
    assert (now["fe-a@h:1"]["role"], now["fe-a@h:1"]["generation"]) == ("standby", None)
    assert now["fe-a@h:1"]["started_at"] == first["started_at"]  # the same process, seen again


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_frontend_that_stops_leaves_the_registry(frontend: Frontend, admin: Api) -> None:
    leadership = Leadership(Lease(frontend.db, "fe-a@h:1", lease_s=2.0), on_lead=lambda g: None,
                            on_lose=lambda g: None, renew_s=RENEW_S, margin_s=0.5)
    leadership.start()
    until(lambda: listed(admin).get("fe-a@h:1", {}).get("role") == "leader", 5, "the leader to register")
    leadership.stop()
    assert listed(admin) == {}


def test_silent_frontends_are_shown_as_gone_then_forgotten(frontend: Frontend, admin: Api) -> None:
    if frontend.db.is_sqlite:
        lock = SingleFrontendLock(Path(frontend.db.engine.url.database or ""))
        lock.announce(frontend.db, "fe-a", "https://a.test:8080")
        holder = holder_id("fe-a")
        try:
            entry = listed(admin)[holder]
            assert (entry["role"], entry["generation"], entry["status"]) == ("leader", 0, "up")
            age_rows(frontend, holder, "60 seconds")
            assert listed(admin)[holder]["status"] == "gone"
            age_rows(frontend, holder, "2 days")
            assert forget_long_gone(frontend.db) == 1 and listed(admin) == {}
            lock._presence.run_once()  # type: ignore[union-attr]  # its next round writes it again
            assert listed(admin)[holder]["status"] == "up"
        finally:
            lock.release()
        assert listed(admin) == {}  # a clean stop leaves
        return
    lease = Lease(frontend.db, "fe-a@h:1", lease_s=60.0)
    lease.take_or_extend()
    age_rows(frontend, "fe-a@h:1", "60 seconds")
    assert listed(admin)["fe-a@h:1"]["status"] == "gone"
    age_rows(frontend, "fe-a@h:1", "2 days")
    assert forget_long_gone(frontend.db) == 1 and listed(admin) == {}


def test_only_admins_list_frontends(admin: Api) -> None:
    tenant = admin.tenant("acme")
    response = tenant.get("/v1/frontends")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_clctl_frontend_list(frontend: Frontend, client: TestClient, admin: Api,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    Lease(frontend.db, "fe-a@h:1", lease_s=60.0, api_url="https://a.test:8080").take_or_extend()
    Lease(frontend.db, "fe-b@h:2", lease_s=60.0).take_or_extend()
    monkeypatch.setattr(clctl.client, "http_client", lambda endpoint, timeout, ca_file: TestClient(client.app))
    env = {"CLOUDLAND_TOKEN": admin.token, "CLOUDLAND_ENDPOINT": "http://cloud.test"}
    result = CliRunner().invoke(cli, ["frontend", "list"], env=env)
    assert result.exit_code == 0, result.output
    header, *rows = [line.split() for line in result.stdout.splitlines()]
    assert header[:5] == ["NODE", "ROLE", "GENERATION", "STATUS", "SEEN"]
    assert [r[:4] for r in rows] == [["fe-a", "leader", "1", "up"], ["fe-b", "standby", "-", "up"]]
    result = CliRunner().invoke(cli, ["frontend", "list", "--json"], env=env)
    assert [f["role"] for f in json.loads(result.stdout)["items"]] == ["leader", "standby"]
