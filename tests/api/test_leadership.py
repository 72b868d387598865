"""The leadership lease on a real PostgreSQL: judged by the database's clock, fenced by a
generation, and given up by a leader that cannot renew before any successor may take it."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from frontend.db import Database, upgrade
from frontend.leadership import Lease, Leadership, SingleFrontendLock
from tests.api.conftest import TEMPLATE
from localcluster.pgserver import PostgresServer
from tests.support.waiting import until


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[Database]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    database = Database(postgres.create_database(name, template=TEMPLATE))
    upgrade(database)
    yield database
    database.dispose()
    postgres.drop_database(name)


def test_the_first_takes_the_lease_others_wait_for_it_to_run_out(db: Database) -> None:
    a, b = Lease(db, "a", lease_s=1.0), Lease(db, "b", lease_s=1.0)
    assert a.take_or_extend() == 1
    assert b.take_or_extend() is None
    assert a.take_or_extend() == 1  # extended, same term
    view = b.read()
    assert view is not None and view.holder == "a" and view.live and view.generation == 1
    assert until(lambda: b.take_or_extend(), 5, "the lease to run out for b") == 2
    assert a.take_or_extend() is None  # the old holder is fenced off: b leads under generation 2


def test_a_released_lease_is_taken_at_once_under_the_next_generation(db: Database) -> None:
    a, b = Lease(db, "a", lease_s=60.0), Lease(db, "b", lease_s=60.0)
    assert a.take_or_extend() == 1
    a.release(1)
    assert b.take_or_extend() == 2
    a.release(1)  # a stale release does not free b's lease
    assert a.take_or_extend() is None


def test_a_dead_holders_lease_is_taken_without_waiting_for_it_to_run_out(db: Database) -> None:
    a, b = (Lease(db, name, lease_s=60.0, dead_after_s=0.3) for name in ("a", "b"))
    assert a.take_or_extend() == 1
    a.close()  # its session ends, as a killed process's does
    assert b.take_or_extend() is None  # renewed too lately to be dead
    started = time.monotonic()
    assert until(b.take_or_extend, 10, "b to take the dead a's lease", every=0.05) == 2
    assert time.monotonic() - started < 10  # not the lease's 60 s
    assert a.take_or_extend() is None


def test_a_silent_holder_whose_session_lives_is_waited_out(db: Database) -> None:
    """Paused, or cut off by a partition: the server keeps its session, so it may still be leading."""
    a, b = (Lease(db, name, lease_s=1.5, dead_after_s=0.2) for name in ("a", "b"))
    assert a.take_or_extend() == 1
    time.sleep(0.6)
    assert b.take_or_extend() is None
    assert until(b.take_or_extend, 10, "the lease to run out for b", every=0.05) == 2


def test_a_holder_renewing_on_a_new_session_keeps_its_term(db: Database) -> None:
    a, b = (Lease(db, name, lease_s=60.0, dead_after_s=0.3) for name in ("a", "b"))
    assert a.take_or_extend() == 1
    a.close()
    assert a.take_or_extend() == 1  # the same term, now named by its new session
    time.sleep(0.5)
    assert b.take_or_extend() is None


def test_sqlite_has_no_lease(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        Lease(Database(f"sqlite:///{tmp_path / 'state.db'}"), "a", 5.0)


class HangingLease(Lease):
    """A lease whose connection stops answering (a partition, a paused server) once told to."""

    hang = threading.Event()
    answer = threading.Event()

    def take_or_extend(self) -> int | None:
        if self.hang.is_set():
            self.answer.wait(30)
        return super().take_or_extend()


def test_a_leader_that_cannot_renew_steps_down_before_a_successor_may_lead(db: Database) -> None:
    HangingLease.hang.clear()
    HangingLease.answer.clear()
    lost_at: list[float] = []
    leader = Leadership(HangingLease(db, "a", lease_s=2.0), on_lead=lambda g: None,
                        on_lose=lambda g: lost_at.append(time.monotonic()), renew_s=0.2, margin_s=0.5)
    leader.start()
    try:
        until(lambda: leader.leading, 5, "a to lead")
        HangingLease.hang.set()
        successor = Lease(db, "b", lease_s=2.0)
        generation = until(successor.take_or_extend, 10, "b to take the lease", every=0.02)
        taken_at = time.monotonic()
        assert generation == 2
        assert lost_at and lost_at[0] < taken_at, "the old leader led past the moment the successor took over"
        assert not leader.leading
    finally:
        HangingLease.answer.set()
        leader.stop()


class FailingLease(Lease):
    """A lease whose renewals fail once told to: its session ended (an administrator, a restart)."""

    fail = threading.Event()

    def take_or_extend(self) -> int | None:
        if self.fail.is_set():
            self.close()
            raise ConnectionError("server closed the connection unexpectedly")
        return super().take_or_extend()


def test_a_leader_whose_renewal_fails_steps_down_before_a_successor_takes_its_dead_session_over(
        db: Database) -> None:
    FailingLease.fail.clear()
    lost_at: list[float] = []
    leader = Leadership(FailingLease(db, "a", lease_s=30.0, dead_after_s=0.4), on_lead=lambda g: None,
                        on_lose=lambda g: lost_at.append(time.monotonic()), renew_s=0.2, margin_s=0.5)
    leader.start()
    try:
        until(lambda: leader.leading, 5, "a to lead")
        FailingLease.fail.set()
        successor = Lease(db, "b", lease_s=30.0, dead_after_s=0.4)
        assert until(successor.take_or_extend, 10, "b to take the lease", every=0.02) == 2
        taken_at = time.monotonic()
        assert lost_at and lost_at[0] < taken_at, "the old leader led past the moment the successor took over"
        assert not leader.leading
    finally:
        leader.stop()


def test_a_leader_that_stepped_down_does_not_lead_again_when_its_renewals_come_back(db: Database) -> None:
    """A renewal held up past the safe span, answered later, still extends the same term in the
    database: the old leader must not take it as leading again, nor keep the lease from a successor."""
    HangingLease.hang.clear()
    HangingLease.answer.clear()
    terms: list[int] = []
    leader = Leadership(HangingLease(db, "a", lease_s=2.0), on_lead=terms.append, on_lose=lambda g: None,
                        renew_s=0.2, margin_s=0.5)
    leader.start()
    try:
        until(lambda: leader.leading, 5, "a to lead")
        HangingLease.hang.set()
        until(lambda: not leader.leading, 5, "a to step down")
        HangingLease.hang.clear()
        HangingLease.answer.set()  # the held renewal goes through, and extends generation 1
        successor = Lease(db, "b", lease_s=2.0)
        assert until(successor.take_or_extend, 10, "b to take the lease", every=0.05) == 2
        assert terms == [1] and not leader.leading
    finally:
        HangingLease.answer.set()
        leader.stop()


def test_a_second_frontend_on_one_sqlite_database_is_refused(tmp_path: Path) -> None:
    first, second = SingleFrontendLock(tmp_path / "cloudland.db"), SingleFrontendLock(tmp_path / "cloudland.db")
    first.acquire()
    with pytest.raises(ValueError, match=r"another frontend \(frontend@.*\) already runs on the SQLite database "
                                         r".*cloudland\.db"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()
