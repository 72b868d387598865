"""Listing events and the audit log: their filters are checked before they reach a query."""

from __future__ import annotations

import pytest

from frontend.db.models import Event
from frontend.hostalias import alias
from frontend.services import Frontend
from tests.api.conftest import Api
from tests.api.test_networks import invalid


@pytest.mark.parametrize("path", ["/v1/events", "/v1/audit"])
def test_a_since_that_leaves_the_calendar_in_utc_is_invalid(admin: Api, path: str) -> None:
    # Found by the API fuzzer: converting these to UTC overflowed, and the list answered 500.
    for since in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        assert invalid(admin.get(path, params={"since": since}), "since")["reason"] == \
            "is out of range once converted to UTC"
    assert admin.get(path, params={"since": "9999-12-31T23:59:59+01:00"}).status_code == 200


def test_since_with_an_offset_is_compared_in_utc(admin: Api, frontend: Frontend) -> None:
    with frontend.db.transaction() as session:
        org = admin.who["org_id"]
        session.add(Event(org_id=org, kind="host.down", host="hv0", message="gone"))
    created = admin.ok("get", "/v1/events")["items"][0]["created_at"]
    assert created.endswith("Z")  # the API answers UTC with its zone
    assert [e["kind"] for e in admin.ok("get", "/v1/events", params={"since": created})["items"]] == ["host.down"]
    naive = created.removesuffix("Z")
    assert [e["kind"] for e in admin.ok("get", "/v1/events", params={"since": naive})["items"]] == ["host.down"]
    assert admin.ok("get", "/v1/events", params={"since": naive + "-01:00"})["items"] == []


def test_event_filters_that_can_match_nothing_are_invalid(admin: Api) -> None:
    # Found by the API fuzzer: on PostgreSQL a NUL in a filter was a 500.
    for bad in ("a\x00", "Drift", "a b"):
        invalid(admin.get("/v1/events", params={"kind": bad}), "kind")
    invalid(admin.get("/v1/events", params={"host": "hv\x00"}), "host")
    invalid(admin.get("/v1/audit", params={"user": "bob\x00"}), "user")
    invalid(admin.get("/v1/audit", params={"path_prefix": "/v1/\x00"}), "path_prefix")
    assert admin.ok("get", "/v1/events", params={"kind": "drift", "host": "hv0"})["items"] == []


def test_a_tenant_filters_by_the_alias_it_is_shown_and_an_admin_by_the_name(admin: Api, frontend: Frontend) -> None:
    tenant = admin.tenant("acme", role="member")
    org = tenant.who["org_id"]
    with frontend.db.transaction() as session:
        session.add_all([Event(org_id=org, kind="task.failed", host="hv0", message="on {host:hv0}"),
                         Event(org_id=org, kind="task.failed", host="hv1", message="on {host:hv1}"),
                         Event(org_id=admin.who["org_id"], kind="host.down", host="hv0", message="gone")])
    shown = {e["host"]: e for e in tenant.ok("get", "/v1/events")["items"]}
    assert set(shown) == {alias(org, "hv0"), alias(org, "hv1")}
    found = tenant.ok("get", "/v1/events", params={"host": alias(org, "hv0")})["items"]
    assert [(e["host"], e["message"]) for e in found] == [(alias(org, "hv0"), f"on {alias(org, 'hv0')}")]
    # A real name is no way in for a tenant, nor another organization's alias of the same host.
    assert tenant.ok("get", "/v1/events", params={"host": "hv0"})["items"] == []
    assert tenant.ok("get", "/v1/events", params={"host": alias(admin.who["org_id"], "hv0")})["items"] == []
    # Admins filter by real names, in their organization or, asked for, in every one.
    assert [e["kind"] for e in admin.ok("get", "/v1/events", params={"host": "hv0"})["items"]] == ["host.down"]
    assert admin.ok("get", "/v1/events", params={"host": alias(org, "hv0")})["items"] == []
    every = admin.ok("get", "/v1/events", params={"host": "hv0", "all_orgs": "true"})["items"]
    assert sorted((e["org_id"], e["host"]) for e in every) == sorted([(org, "hv0"), (admin.who["org_id"], "hv0")])
