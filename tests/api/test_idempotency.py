"""Idempotency-Key: a change sent again with its key is done once, and answered as the first was."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from frontend.bootstrap import admin_org_id
from frontend.db.models import Flavor, IdempotencyKey, utcnow
from frontend.idempotency import Claim, KeyInUse, claiming
from frontend.retention import Retention
from frontend.services import Frontend
from tests.api.conftest import ADMIN_PASSWORD, Api, error_of

SMALL = {"name": "small", "vcpus": 1, "memory_mb": 512, "disk_gb": 1}


def flavors(frontend: Frontend) -> int:
    with frontend.db.read() as session:
        return int(session.execute(select(func.count()).select_from(Flavor)).scalar_one())


def keyed(key: str) -> dict[str, Any]:
    return {"headers": {"Idempotency-Key": key}}


def test_a_change_sent_again_is_done_once_and_answered_the_same(admin: Api, frontend: Frontend) -> None:
    before = flavors(frontend)
    first = admin.post("/v1/flavors", json=SMALL, **keyed("k-1"))
    again = admin.post("/v1/flavors", json=SMALL, **keyed("k-1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert flavors(frontend) == before + 1
    # Without a key, or with another, it is a new call (here refused: the name is taken).
    assert admin.post("/v1/flavors", json=SMALL, **keyed("k-2")).status_code == 409
    assert admin.post("/v1/flavors", json=SMALL).status_code == 409


def test_a_refused_call_leaves_no_trace_and_runs_again(admin: Api, frontend: Frontend) -> None:
    refused = admin.post("/v1/flavors", json={**SMALL, "vcpus": 0}, **keyed("k-1"))
    assert refused.status_code == 422
    assert admin.post("/v1/flavors", json=SMALL, **keyed("k-1")).status_code == 201
    with frontend.db.read() as session:
        assert session.execute(select(IdempotencyKey.status)).scalars().all() == [201]


def test_a_key_names_one_call(admin: Api) -> None:
    admin.ok("post", "/v1/flavors", 201, json=SMALL, **keyed("k-1"))
    reused = admin.post("/v1/orgs", json={"name": "acme"}, **keyed("k-1"))
    assert reused.status_code == 422
    assert error_of(reused)["field"] == "Idempotency-Key"
    assert "already used for POST /v1/flavors" in error_of(reused)["reason"]


@pytest.mark.parametrize("key", ["", "with space", "x" * 256, "with\ttab"])
def test_a_malformed_key_is_refused(admin: Api, frontend: Frontend, key: str) -> None:
    before = flavors(frontend)
    refused = admin.post("/v1/flavors", json=SMALL, **keyed(key))
    assert refused.status_code == 422, refused.text
    assert error_of(refused)["field"] == "Idempotency-Key"
    assert flavors(frontend) == before


def test_a_call_that_changed_something_and_never_answered_is_not_run_again(admin: Api, frontend: Frontend) -> None:
    """Its frontend died between its commit and its answer: the repeat is told, not run."""
    first = admin.ok("post", "/v1/flavors", 201, json=SMALL, **keyed("k-1"))
    with frontend.db.transaction() as session:
        row = session.execute(select(IdempotencyKey)).scalar_one()
        row.status, row.body = None, None
    again = admin.post("/v1/flavors", json=SMALL, **keyed("k-1"))
    assert again.status_code == 409
    assert error_of(again)["field"] == "Idempotency-Key"
    assert "stopped before answering" in error_of(again)["reason"]
    assert admin.ok("get", f"/v1/flavors/{first['id']}")["name"] == "small"


def test_two_runs_of_one_key_at_once_change_once(frontend: Frontend) -> None:
    """The second to commit its change finds the key claimed, and its transaction changes nothing."""
    org = admin_org_id(frontend.db)
    claim = Claim("scope", "k-1", "POST", "/v1/flavors")
    with claiming(claim), frontend.db.transaction() as session:
        session.add(Flavor(org_id=org, name="first", status="active", vcpus=1, memory_mb=512, disk_gb=1))
    assert claim.committed
    before = flavors(frontend)
    with pytest.raises(KeyInUse), claiming(Claim("scope", "k-1", "POST", "/v1/flavors")), \
            frontend.db.transaction() as session:
        session.add(Flavor(org_id=org, name="second", status="active", vcpus=1, memory_mb=512, disk_gb=1))
    assert flavors(frontend) == before


def test_keys_are_the_callers_own(admin: Api, frontend: Frontend) -> None:
    other = admin.tenant("acme")
    admin.ok("post", "/v1/flavors", 201, json=SMALL, **keyed("k-1"))
    assert other.post("/v1/keypairs", json={"name": "k", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM9cT+9l"
                                                                       "Ac68DxQQX5EMQe5nxCJw736wbzEqSyZ6T+EI"},
                      **keyed("k-1")).status_code == 201


def test_keys_are_forgotten_after_a_day(admin: Api, frontend: Frontend) -> None:
    admin.ok("post", "/v1/flavors", 201, json=SMALL, **keyed("k-1"))
    with frontend.db.transaction() as session:
        session.execute(select(IdempotencyKey)).scalar_one().created_at = utcnow() - dt.timedelta(days=1, minutes=1)
    assert Retention(frontend.db, audit_days=0, event_days=0).run_once() == {"idempotency_keys": 1}


def test_answers_that_are_secrets_are_not_kept(admin: Api, frontend: Frontend) -> None:
    """A token or an enrolment token would sit in the clear in the database: those calls take no key."""
    issued = [admin.ok("post", "/v1/tokens", 201, json={"username": "admin", "password": ADMIN_PASSWORD},
                       **keyed("k-1"))["token"] for _ in range(2)]
    assert issued[0] != issued[1]
    with frontend.db.read() as session:
        assert session.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one() == 0
