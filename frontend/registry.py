"""The frontends registry (the ``frontends`` table): which frontend processes run, where their API
is, and whether they lead.

On PostgreSQL a frontend's row is written by the lease's own statement (``leadership.py``), so
registering costs no extra round trip.  On SQLite the one frontend writes its row every
``SQLITE_EVERY_S`` (``SqlitePresence``).  Every time is the database's.  A row not written for
``GONE_AFTER_S`` is shown as gone; one not written for ``FORGET_AFTER`` is deleted by the next
frontend that starts: rows pile up only through restarts, and each restart clears the old ones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .db import Database
from .db.engine import changed
from .db.models import FrontendProcess
from .periodic import Periodic

__all__ = ["FORGET_AFTER", "GONE_AFTER_S", "SQLITE_EVERY_S", "Seen", "SqlitePresence", "forget_long_gone", "leave",
           "seen"]

log = structlog.get_logger("frontend.registry")

#: seconds without a word after which a frontend is shown as gone: many renewals (0.5 s) on
#: PostgreSQL, three rounds of SqlitePresence on SQLite
GONE_AFTER_S = 30.0
FORGET_AFTER = dt.timedelta(days=1)
SQLITE_EVERY_S = 10.0


@dataclasses.dataclass(frozen=True)
class Seen:
    """A registry row with its ages, by the database's clock."""

    row: FrontendProcess
    #: seconds since it last wrote its row
    seen_age_s: float
    #: gone: not seen for GONE_AFTER_S
    status: Literal["up", "gone"]


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite answers naive UTC, PostgreSQL a time with its zone.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def _now(session: Session) -> dt.datetime:
    return _aware(session.execute(select(func.now())).scalar_one())


def seen(db: Database) -> list[Seen]:
    """Every registered frontend, the leader first, then by node id."""
    with db.read() as session:
        now = _now(session)
        rows = session.execute(select(FrontendProcess).order_by(FrontendProcess.node_id,
                                                                  FrontendProcess.holder)).scalars().all()
    found = []
    for row in rows:
        age = max(0.0, (now - _aware(row.last_seen)).total_seconds())
        found.append(Seen(row, age, "up" if age <= GONE_AFTER_S else "gone"))
    return sorted(found, key=lambda s: (s.status != "up" or s.row.role != "leader", s.status != "up"))


def forget_long_gone(db: Database) -> int:
    """Delete the rows of frontends not seen for FORGET_AFTER; how many went."""
    with db.transaction() as session:
        cutoff = session.execute(select(func.now())).scalar_one() - FORGET_AFTER
        count = changed(session, delete(FrontendProcess).where(FrontendProcess.last_seen < cutoff))
    if count:
        log.info("frontends_forgotten", count=count, not_seen_for=str(FORGET_AFTER))
    return count


def leave(db: Database, holder: str) -> None:
    """A frontend that stops cleanly is not one any more."""
    with db.transaction() as session:
        session.execute(delete(FrontendProcess).where(FrontendProcess.holder == holder))


class SqlitePresence(Periodic):
    """On SQLite, the one frontend's row: written now, again every SQLITE_EVERY_S, deleted at stop.

    It always leads (generation 0): on SQLite there is no lease to write the row with.
    """

    name = "frontend-presence"

    def __init__(self, db: Database, holder: str, node_id: str, api_url: str) -> None:
        super().__init__(SQLITE_EVERY_S)
        self.db = db
        self.holder = holder
        self.node_id = node_id
        self.api_url = api_url

    def start(self) -> None:
        forget_long_gone(self.db)
        self.run_once()
        super().start()

    def stop(self) -> None:
        super().stop()
        try:
            leave(self.db, self.holder)
        except Exception:  # its row ages out instead
            log.warning("frontend_leave_failed", holder=self.holder, exc_info=True)

    def run_once(self) -> None:
        statement = sqlite_insert(FrontendProcess).values(
            holder=self.holder, node_id=self.node_id, api_url=self.api_url, role="leader", generation=0,
            started_at=func.now(), last_seen=func.now())
        statement = statement.on_conflict_do_update(index_elements=[FrontendProcess.holder],
                                                    set_={"last_seen": statement.excluded.last_seen})
        with self.db.transaction() as session:
            session.execute(statement)
