"""Tasks created on a standby frontend reach the leader at once: PostgreSQL's NOTIFY and LISTEN.

Every frontend serves the API, but only the leader runs tasks (``leader.py``).  A standby that
creates a task announces its id on ``CHANNEL`` after the task's transaction committed; the
leader listens on a connection of its own and starts each task it hears of.  A notice lost
while the leader's listening connection was down costs only time: the listener starts every
unfinished task again when it reconnects, and the leader's resumer does every minute.
"""

from __future__ import annotations

import threading
from typing import Callable

import psycopg
import structlog
from sqlalchemy import func, select

from .db import Database

__all__ = ["CHANNEL", "TaskListener", "announce"]

log = structlog.get_logger("frontend.tasknotices")

CHANNEL = "cloudland_tasks"
#: seconds between attempts to listen again after the connection failed
_RETRY_S = 1.0


def announce(db: Database, task_id: str) -> None:
    """Tell the leader that task ``task_id`` is waiting (from a standby, once the task committed)."""
    with db.transaction() as session:
        session.execute(select(func.pg_notify(CHANNEL, task_id)))
    log.info("task_announced", task=task_id)


class TaskListener:
    """The leader's ear: ``start_task`` for each announced id, ``resume_all`` after a reconnect (the
    first connect needs none: the leader resumes every unfinished task as it takes over)."""

    def __init__(self, db: Database, start_task: Callable[[str], object], resume_all: Callable[[], object]) -> None:
        self.dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.start_task = start_task
        self.resume_all = resume_all
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="task-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                self._listen(catch_up=not first)
            except psycopg.Error as exc:
                first = False
                log.warning("task_listener_lost", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                self._stop.wait(_RETRY_S)

    def _listen(self, catch_up: bool) -> None:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            log.info("task_listener_ready", channel=CHANNEL)
            if catch_up:
                self.resume_all()  # what was announced while nobody listened
            while not self._stop.is_set():
                for notice in conn.notifies(timeout=0.5):
                    self.start_task(notice.payload)
