"""A host that (re)joins the tree, or missed a sync, is sent its whole network state, and converges on it.

A backend restarted, or cut off while its networks changed, missed syncs (``net.sync``
commands of tasks do not fail, nor wait, for hosts that are away).  When the tree sees it join
or return, or once it is attached again after a sync did not reach it (its agent died and it
re-attached elsewhere: the tree saw no new session), it gets a full ``net.sync``
(``netstate.full_sync``): it builds what is missing, removes what is no longer wanted and
leaves the rest, so traffic of ports that did not change is never cut.  A full sync that does
not reach its host either is owed again.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable

import structlog
from sqlalchemy import select

from sci import CommandHandle, Status, Targets

from .db import Database
from .db.models import Hypervisor
from .netstate import NET_SYNC, full_sync
from .tasks import Submit

__all__ = ["HostNetworks"]

log = structlog.get_logger("frontend.network")

#: seconds a host has to converge on its whole state
FULL_SYNC_TIMEOUT = 120.0


class HostNetworks:
    def __init__(self, db: Database, submit: Submit) -> None:
        self.db = db
        self.submit = submit
        # Waiting for answers must not hold the host monitor's round.
        self._waiters = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="netsync")
        #: hosts a sync did not reach, owed their whole state
        self._owed: set[str] = set()
        self._lock = threading.Lock()

    def owe(self, hosts: list[str]) -> None:
        with self._lock:
            self._owed.update(hosts)
        log.info("host_networks_owed", hosts=len(hosts))

    def catch_up(self, attached: Callable[[str], bool]) -> None:
        """Send their whole state to the hosts owed it that are attached now."""
        with self._lock:
            due = sorted(h for h in self._owed if attached(h))
        self.rejoined(due)

    def rejoined(self, hosts: list[str]) -> None:
        """Send each host that runs the network driver its whole state (which settles what it was owed)."""
        if not hosts:
            return
        with self._lock:
            self._owed.difference_update(hosts)
        bodies = {}
        with self.db.read() as session:
            # Columns, not objects: a new leader sees every host rejoin at once, 10,000 at a time.
            for name, facts in session.execute(select(Hypervisor.name, Hypervisor.facts)
                                               .where(Hypervisor.name.in_(hosts))):
                if isinstance(facts, dict) and facts.get("vtep"):
                    bodies[name] = full_sync(session, name)
        for name, body in bodies.items():
            handle = self.submit(NET_SYNC, body, Targets.to(name), FULL_SYNC_TIMEOUT, None)
            self._waiters.submit(self._report, name, handle, len(body["networks"]))

    def _report(self, host: str, handle: CommandHandle, networks: int) -> None:
        for _, result in handle.results(FULL_SYNC_TIMEOUT + 10):
            if result.ok:
                log.info("host_networks_converged", host=host, networks=networks)
            else:
                log.warning("host_networks_not_converged", host=host, status=result.status.name,
                            message=result.message)
                if result.status is not Status.ERROR:  # away again: once it is back
                    self.owe([host])

    def close(self) -> None:
        self._waiters.shutdown(wait=False, cancel_futures=True)
