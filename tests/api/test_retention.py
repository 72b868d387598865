"""Retention: audit records and events older than their retention are deleted, in bounded batches."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
import structlog.testing
from sqlalchemy import delete, insert, select

from frontend import retention as retention_module
from frontend.bootstrap import admin_org_id
from frontend.db.models import AuditRecord, Event, utcnow
from frontend.retention import Retention
from frontend.services import Frontend


def _add(frontend: Frontend, audit_ages: list[int], event_ages: list[int]) -> None:
    """Audit records and events created the given numbers of days ago."""
    now, org = utcnow(), admin_org_id(frontend.db)
    with frontend.db.transaction() as session:
        if audit_ages:
            session.execute(insert(AuditRecord), [
                {"created_at": now - dt.timedelta(days=age), "method": "POST", "route": f"/v1/{age}", "status": 201}
                for age in audit_ages])
        if event_ages:
            session.execute(insert(Event), [
                {"created_at": now - dt.timedelta(days=age), "org_id": org, "kind": "host.up", "message": str(age)}
                for age in event_ages])


def _ages(frontend: Frontend) -> tuple[list[int], list[int]]:
    """The ages in days, oldest first, of the audit records and events left."""
    now = utcnow()
    with frontend.db.read() as session:
        audit = session.execute(select(AuditRecord.created_at).order_by(AuditRecord.created_at)).scalars().all()
        events = session.execute(select(Event.created_at).order_by(Event.created_at)).scalars().all()
    return [(now - t).days for t in audit], [(now - t).days for t in events]


@pytest.fixture
def clean(frontend: Frontend) -> Frontend:
    """The frontend with no audit record or event yet, whatever bootstrap wrote."""
    with frontend.db.transaction() as session:
        session.execute(delete(AuditRecord))
        session.execute(delete(Event))
    return frontend


def test_rows_older_than_their_retention_go_and_newer_ones_stay(clean: Frontend) -> None:
    _add(clean, audit_ages=[400, 366, 364, 0], event_ages=[365, 91, 89, 0])
    with structlog.testing.capture_logs() as logs:
        deleted = Retention(clean.db, audit_days=365, event_days=90).run_once()
    assert deleted == {"audit_log": 2, "events": 2, "idempotency_keys": 0}
    assert _ages(clean) == ([364, 0], [89, 0])
    [pruned] = [e for e in logs if e["event"] == "retention_pruned"]
    assert pruned["deleted"] == {"audit_log": 2, "events": 2, "idempotency_keys": 0}
    cutoffs = {table: dt.datetime.fromisoformat(at) for table, at in pruned["older_than"].items()}
    assert all(at.tzinfo == dt.timezone.utc for at in cutoffs.values())
    now = dt.datetime.now(dt.timezone.utc)
    assert abs(now - dt.timedelta(days=365) - cutoffs["audit_log"]) < dt.timedelta(minutes=1)
    assert abs(now - dt.timedelta(days=90) - cutoffs["events"]) < dt.timedelta(minutes=1)


def test_a_round_that_deletes_nothing_logs_nothing(clean: Frontend) -> None:
    _add(clean, audit_ages=[10], event_ages=[10])
    with structlog.testing.capture_logs() as logs:
        assert Retention(clean.db, audit_days=365, event_days=90).run_once() == {"audit_log": 0, "events": 0,
                                                                                  "idempotency_keys": 0}
    assert [e for e in logs if e["event"] == "retention_pruned"] == []


def test_zero_keeps_everything(clean: Frontend) -> None:
    _add(clean, audit_ages=[40000, 1], event_ages=[40000, 1])
    with structlog.testing.capture_logs() as logs:
        assert Retention(clean.db, audit_days=0, event_days=0).run_once() == {"idempotency_keys": 0}
    assert _ages(clean) == ([40000, 1], [40000, 1])
    assert [e for e in logs if e["event"] == "retention_pruned"] == []
    # Each table has its own retention: keeping one forever leaves the other's pruned.
    assert Retention(clean.db, audit_days=0, event_days=30).run_once() == {"events": 1, "idempotency_keys": 0}
    assert _ages(clean) == ([40000, 1], [1])


@pytest.mark.parametrize("old, statements", [(10, [3, 3, 3, 1]), (6, [3, 3, 0])])
def test_batches_loop_past_the_batch_size(clean: Frontend, monkeypatch: pytest.MonkeyPatch, old: int,
                                          statements: list[int]) -> None:
    _add(clean, audit_ages=[100] * old + [1], event_ages=[])
    counts: list[int] = []

    def changed(session: Any, statement: Any) -> int:
        counts.append(real(session, statement))
        return counts[-1]

    real = retention_module.changed
    monkeypatch.setattr(retention_module, "changed", changed)
    assert Retention(clean.db, audit_days=30, event_days=30, batch=3).run_once() == {
        "audit_log": old, "events": 0, "idempotency_keys": 0}
    assert counts == statements + [0, 0]  # the events' and the keys' one statement each found nothing
    assert _ages(clean) == ([1], [])


def test_a_stopped_job_ends_its_round_after_one_batch(clean: Frontend) -> None:
    _add(clean, audit_ages=[100] * 5, event_ages=[100] * 5)
    job = Retention(clean.db, audit_days=30, event_days=30, batch=2)
    job.stop()  # as the frontend does at shutdown, here before the round
    assert job.run_once() == {"audit_log": 2, "events": 2, "idempotency_keys": 0}
    assert _ages(clean) == ([100] * 3, [100] * 3)


def test_it_runs_on_its_own_every_interval(clean: Frontend) -> None:
    _add(clean, audit_ages=[400], event_ages=[400])
    job = Retention(clean.db, audit_days=365, event_days=90, interval=0.05)
    job.start()
    try:
        deadline = time.monotonic() + 10
        while _ages(clean) != ([], []) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        job.stop()
    assert _ages(clean) == ([], [])
