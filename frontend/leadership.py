"""Which frontend leads: a lease in PostgreSQL, with a fencing generation.

Every frontend runs a ``Leadership`` loop.  Each round it tries, in one statement, to take the
lease or to extend the one it holds; the database decides with its own clock (``now()``), so
frontends whose clocks disagree still agree on whether the lease ran out.  A lease taken
anew (not extended) gets the next generation: the fencing token the leader's commands carry.

A leader must stop leading before anyone else may start.  The database lets a successor in
only once ``expires_at`` (database time) has passed; the leader gives up locally once
``lease_s - margin_s`` has passed on its monotonic clock since it *sent* its last successful
renewal.  The renewal ran on the server after it was sent, so the local deadline falls at
least ``margin_s`` before the database's, whatever the wall clocks say; the margin absorbs
the clocks' different rates.  A watchdog thread keeps that deadline even while a renewal
hangs on a dead connection.

A leader that died does not make the others wait out its lease.  The holder renews on one
database session of its own, whose ``pg_backend_pid()`` the lease records.  When a process
dies the kernel closes its connections and PostgreSQL ends its sessions at once, so a lease
whose holder's session is gone and which has not been renewed for ``dead_after_s`` (two
renewal intervals) is taken without waiting for ``expires_at``.  The leader's side of that
rule: a renewal that *fails* ends its term at once, since its session may have ended with it
(killed by an administrator, a database restart); it would otherwise learn of it only at its
watchdog's deadline, after a successor had started.  A leader that is alive but silent (paused,
cut off by a partition) keeps its session on the server and is waited out as before: the
server drops a silent client only after its TCP keepalives give up, hours by default.

Each attempt also writes this frontend's row in the frontends registry (``registry.py``), in
the same statement: every frontend, standby or leader, says it runs and whether it leads, at no
extra round trip.

SQLite has no second frontend to elect: ``SingleFrontendLock`` refuses a second one at start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

import structlog
from sqlalchemy import Connection, text

from service.config import LeadershipSection

from .db import Database
from .registry import SqlitePresence, leave

__all__ = ["LEASE_S", "MARGIN_S", "RENEW_S", "Lease", "LeaseView", "Leadership", "SingleFrontendLock", "holder_id"]

log = structlog.get_logger("frontend.leadership")

LEASE_NAME = "leader"
#: seconds, unless a frontend's ``leadership:`` says otherwise.  A standby takes a dead leader's
#: lease after two renewal intervals, a silent one's within LEASE_S + RENEW_S; a leader that
#: cannot renew stops MARGIN_S before its lease runs out (room for slow clocks and a slow stop).
_DEFAULT = LeadershipSection()
LEASE_S = _DEFAULT.lease_s
RENEW_S = _DEFAULT.renew_s
MARGIN_S = _DEFAULT.margin_s

# One statement, so that taking and extending cannot interleave with another frontend's: the
# row is created by the first frontend ever, extended by its holder while unexpired, and
# taken by anyone (next generation) once expired or once its holder is dead (its session gone,
# no renewal for dead_after_s; NULL turns that off).  A holder whose own lease ran out gets a
# new generation too: it stepped down locally meanwhile, so this is a new term.  The second
# part writes this frontend's registry row with what the first decided (a data-modifying
# WITH runs whether or not the query reads it).
_TAKE_OR_EXTEND = text("""
WITH lease AS (
    INSERT INTO leadership AS l (name, holder, holder_pid, generation, acquired_at, renewed_at, expires_at)
    VALUES (:name, :holder, pg_backend_pid(), 1, now(), now(), now() + make_interval(secs => :lease_s))
    ON CONFLICT (name) DO UPDATE SET
        holder = excluded.holder,
        holder_pid = excluded.holder_pid,
        generation = CASE WHEN l.holder = excluded.holder AND l.expires_at > now()
                          THEN l.generation ELSE l.generation + 1 END,
        acquired_at = CASE WHEN l.holder = excluded.holder AND l.expires_at > now()
                           THEN l.acquired_at ELSE now() END,
        renewed_at = now(),
        expires_at = excluded.expires_at
    WHERE l.holder = excluded.holder OR l.expires_at <= now()
       OR (l.renewed_at <= now() - make_interval(secs => :dead_after_s)
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.holder_pid))
    RETURNING generation
), registered AS (
    INSERT INTO frontends AS f (holder, node_id, api_url, role, generation, started_at, last_seen)
    SELECT :holder, :node_id, :api_url, CASE WHEN lease.generation IS NULL THEN 'standby' ELSE 'leader' END,
           lease.generation, now(), now()
    FROM (VALUES (1)) AS one (n) LEFT JOIN lease ON true
    ON CONFLICT (holder) DO UPDATE SET
        role = excluded.role, generation = excluded.generation, last_seen = excluded.last_seen
)
SELECT generation FROM lease
""")

# A clean stop hands over at once instead of making the successor wait out the lease.
_RELEASE = text("""
UPDATE leadership SET expires_at = now()
WHERE name = :name AND holder = :holder AND generation = :generation AND expires_at > now()
""")

_READ = text("""
SELECT holder, generation, acquired_at, expires_at > now() AS live,
       extract(epoch FROM now() - renewed_at) AS renew_age_s
FROM leadership WHERE name = :name
""")


def holder_id(node_id: str) -> str:
    """A name no other frontend, nor a later run of this one, shares: a restart is a new term."""
    return f"{node_id}@{socket.gethostname()}:{os.getpid()}"


@dataclasses.dataclass(frozen=True)
class LeaseView:
    holder: str
    generation: int
    acquired_at: dt.datetime
    #: whether the lease has not run out, by the database's clock
    live: bool
    #: seconds since the holder last renewed, by the database's clock
    renew_age_s: float


class Lease:
    """The statements on the lease's row, and on this frontend's registry row (PostgreSQL only).

    ``take_or_extend`` runs on a database session of its own, kept from one call to the next:
    the one the lease names as its holder's while this frontend leads.
    """

    def __init__(self, db: Database, holder: str, lease_s: float, api_url: str | None = None,
                 dead_after_s: float | None = None) -> None:
        if db.is_sqlite:
            raise ValueError("a leadership lease needs PostgreSQL (database: postgresql+psycopg://...)")
        self.db = db
        self.holder = holder
        self.lease_s = lease_s
        #: the API this frontend serves, for the registry
        self.api_url = api_url
        #: a holder whose session has ended and that has not renewed for this long is dead; None:
        #: wait for its lease to run out whatever became of it
        self.dead_after_s = dead_after_s
        self._session: Connection | None = None

    def take_or_extend(self) -> int | None:
        """The generation this frontend leads under now, or None if another holds a live lease."""
        if self._session is None:
            self._session = self.db.engine.connect()
        try:
            with self._session.begin():
                row = self._session.execute(_TAKE_OR_EXTEND, {
                    "name": LEASE_NAME, "holder": self.holder, "node_id": self.holder.partition("@")[0][:64],
                    "api_url": self.api_url, "lease_s": self.lease_s, "dead_after_s": self.dead_after_s}).first()
        except Exception:
            self.close()  # the next call starts a new session
            raise
        return None if row is None else int(row[0])

    def close(self) -> None:
        """End this frontend's lease session (a holder's: as its death would)."""
        session, self._session = self._session, None
        if session is not None:
            try:
                session.invalidate()
                session.close()
            except Exception:  # a dead link: the pool has forgotten it either way
                log.debug("lease_session_not_closed", exc_info=True)

    def leave(self) -> None:
        """Take this frontend out of the registry: it stops."""
        leave(self.db, self.holder)

    def release(self, generation: int) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(_RELEASE, {"name": LEASE_NAME, "holder": self.holder, "generation": generation})

    def read(self) -> LeaseView | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(_READ, {"name": LEASE_NAME}).first()
        if row is None:
            return None
        return LeaseView(str(row.holder), int(row.generation), row.acquired_at, bool(row.live),
                         float(row.renew_age_s))


class Leadership:
    """Keeps the lease and says when this frontend starts and stops leading.

    ``on_lead(generation)`` and ``on_lose(generation)`` run on this object's threads, one at a
    time; ``on_lose`` must stop everything ``on_lead`` started before it returns.
    """

    def __init__(self, lease: Lease, on_lead: Callable[[int], None], on_lose: Callable[[int], None],
                 renew_s: float, margin_s: float, on_renewed: Callable[[float], None] | None = None) -> None:
        if not 0 < renew_s < lease.lease_s - margin_s or margin_s <= 0:
            raise ValueError(f"leadership: need 0 < renew_s ({renew_s}) < lease_s ({lease.lease_s}) - margin_s "
                             f"({margin_s}) and margin_s > 0, or the lease runs out between renewals")
        self.lease = lease
        self.on_lead = on_lead
        self.on_lose = on_lose
        self.renew_s = renew_s
        self.margin_s = margin_s
        #: told each successful renewal's latency in seconds (sent to answered)
        self.on_renewed = on_renewed
        #: the generation this frontend leads under; None while it follows
        self.generation: int | None = None
        self._deadline = 0.0  # monotonic: lead no longer than this without a renewal
        self._lock = threading.Lock()  # one change of role at a time
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._watchdog = threading.Thread(target=self._watch_loop, name="lease-watchdog", daemon=True)

    @property
    def leading(self) -> bool:
        return self.generation is not None

    def start(self) -> None:
        self._renewer.start()
        self._watchdog.start()

    def stop(self) -> None:
        """Stop leading (handing the lease over at once) and stop trying to.

        Bounded however the database behaves: a renewal hung on a dead link is left behind (the
        watchdog has ended the term already), and the goodbyes that need the database get a
        lease's time each, so a frontend cut off from it still exits for its supervisor.
        """
        self._stop.set()
        self._renewer.join(self.lease.lease_s)
        self._watchdog.join(self.lease.lease_s)
        with self._lock:
            generation = self.generation
            self._step_down("stopping")
        if not self._renewer.is_alive():  # else it still uses the session, hung on a dead link
            self.lease.close()
        if generation is not None:
            # The successor waits out the lease instead.
            _bounded(lambda: self.lease.release(generation), self.lease.lease_s, "lease_release_failed")
        # Its registry row ages out instead.
        _bounded(self.lease.leave, self.lease.lease_s, "frontend_leave_failed")

    def _renew_loop(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                generation = self.lease.take_or_extend()
            except Exception as exc:  # a renewal that hangs instead is the watchdog's
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                log.warning("lease_renew_failed", error=error)
                with self._lock:
                    # Its session may have ended: a standby takes over dead_after_s after the
                    # last renewal, sooner than the watchdog's deadline.
                    self._step_down(f"renewal failed ({error})")
                self._stop.wait(self.renew_s)
                continue
            answered = time.monotonic()
            with self._lock:
                if self._stop.is_set():
                    break
                self._settle(generation, sent, answered)
            self._stop.wait(max(0.0, self.renew_s - (time.monotonic() - sent)))

    def _settle(self, generation: int | None, sent: float, answered: float) -> None:
        if generation is None:
            self._step_down("another frontend holds the lease")
            return
        if answered >= sent + self.lease.lease_s - self.margin_s:
            # The answer came after this renewal's own safe deadline: whatever is left of the lease
            # cannot be told apart from nothing, so leading on would race a successor.
            self._step_down("renewal answered after the lease's safe span")
            return
        if self.on_renewed is not None:
            self.on_renewed(answered - sent)
        self._deadline = sent + self.lease.lease_s - self.margin_s
        if self.generation != generation:
            self._step_down("new generation")
            self.generation = generation
            log.info("leadership_taken", holder=self.lease.holder, generation=generation)
            self.on_lead(generation)

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self.leading and time.monotonic() >= self._deadline:
                    self._step_down("no renewal within the lease's safe span")
                wait = self._deadline - time.monotonic() if self.leading else self.renew_s
            self._stop.wait(min(max(wait, 0.01), self.renew_s))

    def _step_down(self, reason: str) -> None:
        generation = self.generation
        if generation is None:
            return
        self.generation = None
        # One term per Leadership: the frontend exits once it has lost the lease, for its
        # supervisor to start afresh.  Renewing on would hold the lease for a frontend that no
        # longer leads: a renewal answered late still extends the same term, as the database
        # sees it, and the successor would wait for this process to end.
        self._stop.set()
        log.warning("leadership_lost", holder=self.lease.holder, generation=generation, reason=reason)
        self.on_lose(generation)


def _bounded(call: Callable[[], None], timeout_s: float, failed: str) -> None:
    """``call()`` on a thread of its own, waited for ``timeout_s`` at most; its failure is logged as ``failed``."""
    def run() -> None:
        try:
            call()
        except Exception:
            log.warning(failed, exc_info=True)

    worker = threading.Thread(target=run, name=failed, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        log.warning(failed, reason=f"the database did not answer within {timeout_s:g} s")


class SingleFrontendLock:
    """On SQLite, one frontend per database: a second is refused at start, naming the first."""

    def __init__(self, database_path: Path) -> None:
        self.database_path = database_path
        self.path = database_path.with_name(database_path.name + ".frontend.lock")
        self._file: TextIO | None = None
        self._presence: SqlitePresence | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ValueError(f"database: another frontend ({holder}) already runs on the SQLite database "
                             f"{self.database_path}; several frontends need PostgreSQL "
                             "(see docs/ha.md)") from None
        handle.truncate(0)
        handle.write(holder_id("frontend"))
        handle.flush()
        self._file = handle

    def announce(self, db: Database, node_id: str, api_url: str) -> None:
        """Keep this frontend's row in the frontends registry (on a migrated database) until ``release``."""
        self._presence = SqlitePresence(db, holder_id(node_id), node_id, api_url)
        self._presence.start()

    def release(self) -> None:
        if self._presence is not None:
            self._presence.stop()
            self._presence = None
        if self._file is not None:
            self._file.close()
            self._file = None
