"""Standby frontends on PostgreSQL: wait for the leadership lease, lead, and end with it.

Each frontend waits as a standby, serving nothing, until it holds the lease
(``leadership.py``); standby or leader, it is in the frontends registry (``registry.py``).
Then it resets what the previous leader left half-done outside tasks, takes up the leader's
duties (``leader.py``) and the daemon serves the API.  A frontend that loses the lease stops
its duties and the API and exits: its task engine, root and threads are one term's, and its
supervisor starts it again as a standby.
"""

from __future__ import annotations

import threading
from typing import Callable

import structlog
from sqlalchemy.exc import SQLAlchemyError

from .bootstrap import admin_org_id, recover
from .db.models import Event
from .leader import LeaderDuties
from .leadership import Lease, Leadership, holder_id
from .registry import forget_long_gone
from .services import Frontend

__all__ = ["Election"]

log = structlog.get_logger("frontend.election")


class Election:
    """This frontend's leadership: its duties start when it is elected, and the process ends when
    it is not any more (its engine, root and threads are one term's)."""

    def __init__(self, frontend: Frontend, duties: LeaderDuties, stop_serving: Callable[[], None]) -> None:
        self.frontend = frontend
        self.duties = duties
        self.stop_serving = stop_serving
        self.holder = holder_id(frontend.config.node_id)
        timing = frontend.config.leadership
        # A dead leader's last renewal was at most renew_s before it died; one more interval is
        # room for a living leader whose session ended to have failed its renewal and stepped down.
        lease = Lease(frontend.db, self.holder, timing.lease_s, api_url=frontend.config.api.url,
                      dead_after_s=2 * timing.renew_s)
        self.leadership = Leadership(lease, self._lead, self._lose, timing.renew_s, timing.margin_s,
                                     on_renewed=frontend.metrics.lease_renew_seconds.observe)
        self.decided = threading.Event()
        #: why this frontend does not lead (any more): None while it leads or waits to
        self.ended: str | None = None
        self._stopping = False

    def wait_elected(self) -> bool:
        """Wait as a standby until elected; whether this frontend now leads."""
        log.info("frontend_standby", holder=self.holder)
        try:
            forget_long_gone(self.frontend.db)
        except SQLAlchemyError:  # the next frontend to start clears them
            log.warning("frontends_not_forgotten", exc_info=True)
        self.leadership.start()
        self.decided.wait()
        return self.ended is None

    def stop(self) -> None:
        """Hand the lease over (a shutdown, not a loss)."""
        self._stopping = True
        self.leadership.stop()

    def _lead(self, generation: int) -> None:
        try:
            # Uploads cut off by the previous leader's end: no other frontend serves the API now.
            recover(self.frontend.db, self.frontend.data_dir)
            self.duties.start(generation)
        except Exception as exc:
            log.error("leader_duties_failed", generation=generation, error=f"{type(exc).__name__}: {exc}")
            self.ended = f"cannot lead: {type(exc).__name__}: {exc}"
            self.decided.set()
            return
        self.frontend.generation = generation
        self.frontend.metrics.leader.set(1)
        self.frontend.metrics.takeovers.inc()
        try:
            with self.frontend.db.transaction() as session:
                session.add(Event(org_id=admin_org_id(self.frontend.db), kind="frontend.leader",
                                  resource_type="frontend", resource_id=str(generation),
                                  message=f"{self.holder} leads under generation {generation}"))
        except SQLAlchemyError:  # the database just renewed the lease: a blip, and the log has it too
            log.warning("leader_event_not_recorded", generation=generation, exc_info=True)
        self.decided.set()

    def _lose(self, generation: int) -> None:
        self.frontend.generation = None
        self.frontend.metrics.leader.set(0)
        self.duties.stop()
        if not self._stopping:
            self.ended = self.ended or f"lost the lease of generation {generation}"
        self.stop_serving()
        self.decided.set()
