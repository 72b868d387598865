"""Idempotency keys: a change sent again with the same key is done once.

A call's key is *claimed* (its ``idempotency_keys`` row inserted) inside the transaction of
the call's first change, by SQLAlchemy session hooks that act only while ``claiming`` names a
claim for the current context (the API's middleware sets it around a call; the task engine's
threads never see it).  So a call whose change committed has its row, whatever became of its
frontend afterwards, and a call killed before committing has none and runs for real when it
comes again.  A second claim of the same key (the same call running twice at once) is refused
in that transaction, before it changes anything.

Once the call has answered, ``answered`` stores the answer in the row for a repeat to get back.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
from typing import Iterator

from sqlalchemy import event, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from .db import Database
from .db.models import IdempotencyKey, utcnow
from .errors import Conflict

__all__ = ["KEEP", "Claim", "KeyInUse", "answered", "claiming", "recorded"]

#: how long a key is remembered (``retention.py`` deletes it after)
KEEP = dt.timedelta(days=1)

#: the claim of the call the current context serves, if it came with a key
_current: contextvars.ContextVar["Claim | None"] = contextvars.ContextVar("idempotency_claim", default=None)


class KeyInUse(Conflict):
    """The same key's call has changed something and not answered yet (or is running now)."""

    def __init__(self) -> None:
        super().__init__("a call with this key has made its change and not answered yet: it is still running, or "
                         "its frontend stopped before answering; look at what it made instead of sending it again",
                         "Idempotency-Key")


@dataclasses.dataclass
class Claim:
    scope: str
    key: str
    method: str
    path: str
    #: the session whose transaction holds the claim, until it commits or rolls back
    session: int | None = None
    #: whether the claim committed: the call changed something, and its row exists
    committed: bool = False


@contextlib.contextmanager
def claiming(claim: Claim) -> Iterator[Claim]:
    """Within the block, the first change any session of this context commits claims ``claim``."""
    token = _current.set(claim)
    try:
        yield claim
    finally:
        _current.reset(token)


def recorded(db: Database, scope: str, key: str) -> IdempotencyKey | None:
    with db.read() as session:
        return session.get(IdempotencyKey, (scope, key))


def answered(db: Database, claim: Claim, status: int, body: bytes | None) -> None:
    """Keep the answer of a call whose claim committed."""
    with db.transaction() as session:
        session.execute(update(IdempotencyKey)
                        .where(IdempotencyKey.scope == claim.scope, IdempotencyKey.key == claim.key)
                        .values(status=status, body=body).execution_options(synchronize_session=False))


def _claim(session: Session) -> None:
    claim = _current.get()
    if claim is None or claim.committed or claim.session is not None:
        return
    connection = session.connection()
    insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(IdempotencyKey)
    done = connection.execute(insert.values(scope=claim.scope, key=claim.key, method=claim.method, path=claim.path,
                                            created_at=utcnow()).on_conflict_do_nothing()
                              .returning(IdempotencyKey.key)).first()
    if done is None:
        raise KeyInUse()  # rolls this transaction back: the other call makes the change
    claim.session = id(session)


@event.listens_for(Session, "after_flush")
def _on_flush(session: Session, _flush: UOWTransaction) -> None:
    _claim(session)


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        _claim(state.session)


@event.listens_for(Session, "after_commit")
def _on_commit(session: Session) -> None:
    claim = _current.get()
    if claim is not None and claim.session == id(session):
        claim.committed = True


@event.listens_for(Session, "after_rollback")
def _on_rollback(session: Session) -> None:
    claim = _current.get()
    if claim is not None and claim.session == id(session) and not claim.committed:
        claim.session = None  # the next transaction claims it again
