"""What only the leading frontend does: the tree's root and everything that acts through it.

The API side needs none of this: it reads and writes the database.  The leader's duties are
the root (and its root-only control socket), the live consoles, the host monitor with the network convergence of
hosts that (re)join, the reconciler, the retention of old rows, and resuming tasks left
unfinished.  One ``LeaderDuties`` is one term of leadership: started once, stopped once; a
frontend that leads again builds a new one, since threads, sockets and the root cannot be
restarted.
"""

from __future__ import annotations

import enum
import threading
from typing import Callable

import structlog
from sqlalchemy import func, select

from sci import TreeRoot

from service.config import FrontendConfig

from .control import ControlServer
from .enrolment import reload_keyring
from .db import Database
from .db.models import Hypervisor
from .hosts import HostMonitor
from .liveconsole import ConsoleHub, notice_handlers
from .netconverge import HostNetworks
from .netstate import NET_SYNC
from .notices import NoticeRouter
from .powerstate import POWER_NOTICE, PowerNotices
from .reconcile import Reconciler
from .retention import Retention
from .tasknotices import TaskListener
from .tasks import Resumer, Submit, TaskEngine

__all__ = ["LeaderDuties", "Term"]

log = structlog.get_logger("frontend.leader")


class Term(enum.Enum):
    NEW = "new"
    LEADING = "leading"
    ENDED = "ended"


#: the moves a term may make; anything else is a bug in whoever drives it
MOVES = {(Term.NEW, Term.LEADING), (Term.NEW, Term.ENDED), (Term.LEADING, Term.ENDED)}


class LeaderDuties:
    def __init__(self, config: FrontendConfig, db: Database, root: TreeRoot, tasks: TaskEngine,
                 submit: Submit, consoles: ConsoleHub) -> None:
        self.config = config
        self.db = db
        self.root = root
        self.tasks = tasks
        self.consoles = consoles
        self.control = ControlServer(root, config.control_socket)
        self.host_networks = HostNetworks(db, submit)
        tasks.on_missed(NET_SYNC, self.host_networks.owe)
        self.hosts = HostMonitor(db, root, submit, self.host_networks, wake=tasks.wake)
        self.reconciler = Reconciler(db, submit, config.reconcile_interval_s, reap=config.reap_leftovers)
        self.retention = Retention(db, config.audit_retention_days, config.event_retention_days)
        self.resumer = Resumer(tasks)
        #: tasks that standbys' APIs create (PostgreSQL: on SQLite there are no standbys)
        self.listener = None if db.is_sqlite else TaskListener(db, tasks.start, tasks.resume)
        self.term = Term.NEW
        # Stopped in the reverse order they started: only what did start is stopped.
        self._stops: list[Callable[[], None]] = []

    def _move(self, to: Term) -> None:
        if (self.term, to) not in MOVES:
            raise RuntimeError(f"leader duties cannot go from {self.term.value} to {to.value}")
        self.term = to

    def start(self, generation: int) -> None:
        """Take up every duty; on a failure (the tree's port taken, say) what started is stopped again.

        ``generation`` is the leadership's: the root's commands carry it, and hosts refuse those
        of an older one, so a leader that lost the lease unawares cannot make a host act.
        """
        self._move(Term.LEADING)
        try:
            self.root.root_epoch = generation
            self.root.notice_handler = NoticeRouter({POWER_NOTICE: PowerNotices(self.db),
                                                     **notice_handlers(self.consoles)})
            if self.root.security is not None:
                reload_keyring(self.db, self.root.security.keyring)
            self.root.start()
            self._stops.append(self.root.stop)
            self.consoles.start()
            self._stops.append(lambda: self.consoles.stop("this frontend stopped leading: attach again"))
            self.control.start()
            self._stops.append(self.control.stop)
            # Tasks in flight act through the tree: they stop before it, and resume with the next term.
            self._stops.append(self.tasks.stop)
            self._stops.append(self.host_networks.close)
            for job in (self.hosts, self.reconciler, self.retention):
                job.start()
                self._stops.append(job.stop)
            self._stops.append(self.resumer.stop)
            # From now on the tasks this frontend's API creates run here.
            self.tasks.hand_over = None
            if self.listener is not None:
                self.listener.start()
                self._stops.append(self.listener.stop)
            threading.Thread(target=self._resume_tasks, name="resume", daemon=True).start()
        except BaseException:
            self.stop()
            raise
        log.info("leader_duties_started", tree=self.root.endpoint, control=self.config.control_socket,
                 generation=generation)

    def stop(self) -> None:
        if self.term is Term.ENDED:
            return
        self._move(Term.ENDED)
        while self._stops:
            self._stops.pop()()
        log.info("leader_duties_stopped")

    def _resume_tasks(self) -> None:
        """Resume unfinished tasks once the hosts that were up have found the new root.

        Commands re-sent before their hosts attach again would only wait out the root's reattach
        grace; waiting here first makes a restart after kill -9 finish its tasks cleanly.
        """
        settings = self.config.tree.settings
        with self.db.read() as session:
            expected = int(session.execute(select(func.count()).where(Hypervisor.status == "up")).scalar_one())
        try:
            self.root.wait_for_hosts(expected, timeout=settings.heartbeat_interval * settings.heartbeat_misses * 3 + 10)
        except TimeoutError as exc:
            log.warning("tasks_resume_partial_tree", reason=str(exc))
        if self.term is not Term.LEADING:
            return
        count = self.tasks.resume()
        log.info("tasks_resume_started", tasks=count)
        self.resumer.start()
