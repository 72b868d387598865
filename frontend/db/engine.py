"""Connecting to the state database (SQLite by default, PostgreSQL for real clouds) and migrating it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, cast

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, CursorResult, Engine, Executable, create_engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .models import Organization

__all__ = ["Database", "changed", "lock", "lock_org", "one_at_a_time", "upgrade"]

log = structlog.get_logger("frontend.db")

_READONLY = "cloudland_readonly"

MIGRATIONS = Path(__file__).with_name("migrations")

#: PostgreSQL advisory lock key of the start-up steps (migrating, creating the admin user)
_STARTUP_LOCK = 0x636C6F75  # "clou"


def _sqlite_setup(engine: Engine) -> None:
    """Make SQLite behave: foreign keys on, WAL, and every transaction a writer from its start.

    pysqlite opens transactions lazily and SQLite upgrades a reader to a writer only if no other
    writer came first, failing otherwise.  BEGIN IMMEDIATE takes the write lock up front, so
    the check-then-write sequences of the scheduler and quotas are serialised instead of failing.
    """

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READONLY) else "BEGIN IMMEDIATE")


#: libpq's settings for a link that goes silent (a partition, a dropped route): a connection is
#: given up in seconds, not after the kernel's two hours, so that a cut-off frontend's calls
#: fail and its supervisor's restart can find the database again
_PG_LINK = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
            "keepalives_count": 3, "tcp_user_timeout": 15000}


class Database:
    """An engine and its session factory.  ``url`` is a SQLAlchemy URL."""

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # hide_parameters: a database error's text (logged with tracebacks, task errors) would
        # otherwise quote the values of its statement: user data, password hashes, token digests.
        if self.is_sqlite:
            # One connection per use: SQLite connections are cheap and must not cross threads.
            self.engine = create_engine(url, echo=echo, poolclass=NullPool, hide_parameters=True,
                                        connect_args={"check_same_thread": False, "timeout": 30})
            _sqlite_setup(self.engine)
        else:
            self.engine = create_engine(url, echo=echo, pool_size=20, max_overflow=40, pool_pre_ping=True,
                                        hide_parameters=True, connect_args=_PG_LINK)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(**{_READONLY: True}), expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed at the end of the block, or rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading only: on SQLite it does not take the write lock."""
        with self._readers() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (creating it on an empty database)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        one_at_a_time(conn)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    log.info("db_migrated", revision=db.revision(), url=db.engine.url.render_as_string(hide_password=True))


def one_at_a_time(conn: Connection | Session) -> None:
    """Let one frontend at a time through the rest of this transaction (PostgreSQL; SQLite's
    file lock already does): standby frontends started together on an empty database would
    otherwise all create the schema, or the admin user, at once."""
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    if bind.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_STARTUP_LOCK)))


def changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE or DELETE and return how many rows it changed (a conditional update's verdict)."""
    result = session.execute(statement)
    return int(cast(CursorResult[Any], result).rowcount)


def lock(session: Session, model: Any, row_id: str) -> Any:
    """Read one row and hold it until the transaction ends (FOR UPDATE; SQLite already holds the write lock)."""
    return session.execute(select(model).where(model.id == row_id).with_for_update()).scalar_one_or_none()


def lock_org(session: Session, org_id: str) -> Organization:
    org: Organization = lock(session, Organization, org_id)
    return org
