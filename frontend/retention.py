"""Deleting audit records, events and idempotency keys older than their retention, so that no
table grows forever.

Rows go in batches, each in its own transaction: a first round on a table of millions of rows
holds no long transaction (nor, on SQLite, the database's one write lock for long), and a round
cut short loses nothing but time.  Both tables are indexed on ``created_at``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Mapper

from .db import Database
from .db.engine import changed
from .db.models import AuditRecord, Event, IdempotencyKey, utcnow
from .idempotency import KEEP
from .periodic import Periodic

__all__ = ["BATCH", "Retention"]

log = structlog.get_logger("frontend.retention")

#: rows deleted per statement (and transaction)
BATCH = 10_000


class Retention(Periodic):
    name = "retention"

    def __init__(self, db: Database, audit_days: int, event_days: int, interval: float = 3600.0,
                 batch: int = BATCH) -> None:
        super().__init__(interval)
        self.db = db
        self.batch = batch
        #: how long each table's rows are kept; None: forever
        self._keep: dict[type[AuditRecord] | type[Event] | type[IdempotencyKey], dt.timedelta | None] = {
            AuditRecord: dt.timedelta(days=audit_days) if audit_days else None,
            Event: dt.timedelta(days=event_days) if event_days else None,
            IdempotencyKey: KEEP}

    def run_once(self) -> dict[str, int]:
        """One round; returns the rows deleted per table (a table kept forever is left out)."""
        now = utcnow()
        deleted: dict[str, int] = {}
        cutoffs: dict[str, str] = {}
        for model, keep in self._keep.items():
            if keep is None:
                continue
            cutoff = now - keep
            deleted[model.__tablename__] = self._prune(model, cutoff)
            cutoffs[model.__tablename__] = cutoff.isoformat() + "Z"
        if any(deleted.values()):
            log.info("retention_pruned", deleted=deleted, older_than=cutoffs)
        return deleted

    def _prune(self, model: type[AuditRecord] | type[Event] | type[IdempotencyKey], cutoff: dt.datetime) -> int:
        # DELETE has no LIMIT in standard SQL (nor in PostgreSQL): a batch is named by its keys.
        mapper: Mapper[Any] = model.__mapper__
        columns = list(mapper.primary_key)
        key = tuple_(*columns)
        batch = select(*columns).where(model.created_at < cutoff).limit(self.batch)
        # The session holds no rows, so there is nothing in it to bring in line with the deletion.
        statement = delete(model).where(key.in_(batch)).execution_options(synchronize_session=False)
        total = 0
        while True:
            with self.db.transaction() as session:
                count = changed(session, statement)
            total += count
            # A stopping frontend should not wait for the rest of a long first round: the next start resumes it.
            if count < self.batch or self.stopping:
                return total
