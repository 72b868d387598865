"""``?all_orgs=true`` (``clctl ... list --all-orgs``): admins' views of every organization, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog.testing
from click.testing import CliRunner
from fastapi.testclient import TestClient

import clctl.client
from clctl.main import cli
from frontend.api.app import create_app
from frontend.db.models import Event
from frontend.services import Frontend
from tests.api.conftest import Api
from tests.api.test_networks import refused

#: every list with the view, and the clctl command that asks for it
LISTS = {"/v1/instances": "instance", "/v1/volumes": "volume", "/v1/networks": "network", "/v1/ports": "port",
         "/v1/floating-ips": "fip", "/v1/images": "image", "/v1/events": "event", "/v1/tasks": "task"}


def _audited_reads(admin: Api) -> list[tuple[str, str, int, str | None, str | None]]:
    records = reversed(admin.ok("get", "/v1/audit", params={"method": "GET"})["items"])
    return [(r["route"], r["user_name"], r["status"], r["error"], r["org_id"]) for r in records]


def test_an_admin_sees_every_organization_only_when_asking(admin: Api, frontend: Frontend) -> None:
    acme = admin.tenant("acme")
    net = acme.ok("post", "/v1/networks", 201, json={"name": "acme-net"})
    with frontend.db.transaction() as session:
        session.add(Event(org_id=acme.who["org_id"], kind="drift.vanished", host="hv0", message="gone"))
    assert net["id"] not in [n["id"] for n in admin.ok("get", "/v1/networks")["items"]]
    assert admin.ok("get", "/v1/events")["items"] == []

    every = admin.ok("get", "/v1/networks", params={"all_orgs": "true"})["items"]
    assert {(n["id"], n["org_id"]) for n in every} >= {(net["id"], acme.who["org_id"])}
    events = admin.ok("get", "/v1/events", params={"all_orgs": "true", "host": "hv0"})["items"]
    assert [(e["org_id"], e["host"]) for e in events] == [(acme.who["org_id"], "hv0")]  # real names for admins
    # A filter naming another organization's resource finds it in the view, and only there.
    assert admin.get("/v1/ports", params={"network": net["id"]}).status_code == 404
    assert admin.ok("get", "/v1/ports", params={"network": net["id"], "all_orgs": "true"})["items"] == []
    # Asking for one's own organization only is not a view to record.
    assert admin.ok("get", "/v1/networks", params={"all_orgs": "false"})["items"] == \
        admin.ok("get", "/v1/networks")["items"]
    assert _audited_reads(admin) == [
        ("/v1/networks?all_orgs=true", "admin", 200, None, admin.who["org_id"]),
        ("/v1/events?all_orgs=true", "admin", 200, None, admin.who["org_id"]),
        ("/v1/ports?all_orgs=true", "admin", 200, None, admin.who["org_id"]),
    ]


@pytest.mark.parametrize("role", ["tenant-admin", "member"])
def test_anyone_but_an_admin_is_refused_naming_the_parameter_and_audited(admin: Api, role: str) -> None:
    tenant = admin.tenant("acme", role=role)
    for path in LISTS:
        error = refused(tenant.get(path, params={"all_orgs": "true"}), 403, "forbidden", "all_orgs")
        assert error["message"] == f"all_orgs: a view of every organization needs the admin role; you are {role}"
        tenant.ok("get", path)  # their own organization's, as always
        admin.ok("get", path, params={"all_orgs": "true"})
    assert _audited_reads(admin) == [row for path in LISTS for row in (
        (f"{path}?all_orgs=true", "acme-user", 403, "forbidden", tenant.who["org_id"]),
        (f"{path}?all_orgs=true", "admin", 200, None, admin.who["org_id"]))]


def test_each_list_declares_the_parameter_and_its_refusal(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in LISTS:
        operation = spec["paths"][path]["get"]
        assert "all_orgs" in [p["name"] for p in operation["parameters"]], path
        assert "403" in operation["responses"], path
    assert "all_orgs" not in [p["name"] for p in spec["paths"]["/v1/keypairs"]["get"].get("parameters", ())]


def test_clctl_list_all_orgs(frontend: Frontend, admin: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app = create_app(frontend)
    monkeypatch.setattr(clctl.client, "http_client", lambda *_args, **_kwargs: TestClient(app))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDLAND_ENDPOINT", "http://cloud.test:8080")
    acme = admin.tenant("acme")
    net = acme.ok("post", "/v1/networks", 201, json={"name": "acme-net"})

    def run(token: str | None, *args: str, exit_code: int = 0) -> str:
        monkeypatch.setenv("CLOUDLAND_TOKEN", token or "")
        with structlog.testing.capture_logs():  # the app's logs would land in clctl's output
            result = CliRunner().invoke(cli, list(args), prog_name="clctl")
        assert result.exit_code == exit_code, result.output
        return result.output

    table = run(admin.token, "network", "list", "--all-orgs").splitlines()
    assert table[0].split()[:2] == ["ORG", "ID"]
    assert any(line.split()[:2] == [acme.who["org_id"], net["id"]] for line in table[1:])
    assert run(admin.token, "network", "list").splitlines()[0].split()[0] == "ID"  # one organization: no ORG column
    for command in sorted(set(LISTS.values())):
        assert "items" in json.loads(run(admin.token, command, "list", "--all-orgs", "--json")), command
    refusal = run(acme.token, "instance", "list", "--all-orgs", exit_code=1)
    assert "all_orgs" in refusal and "needs the admin role" in refusal
    assert [r for r in _audited_reads(admin) if r[1] == "acme-user"] == [
        ("/v1/instances?all_orgs=true", "acme-user", 403, "forbidden", acme.who["org_id"])]
