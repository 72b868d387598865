"""Long operations as durable tasks: every step is journalled in the database before it is taken.

A workflow is ordinary Python that calls ``ctx.command(...)`` to send an op to hosts through
the tree and ``ctx.once(...)`` to take a decision (placing an instance, marking it active).
Each call is a numbered step of the task.  Before a command leaves, its step row, holding the
tree command id, is committed; when its results arrive they are committed to the same row.
A decision's value is committed together with whatever the decision wrote.

After a crash (kill -9) the frontend runs every unfinished task's workflow again from the
top.  Steps already done return their recorded results without acting; a command that was
sent but not answered is sent again under the *same* command id, and the hosts' journals
answer it (or let it finish) instead of running it twice.  So a task finishes or fails
exactly once, whatever the frontend went through.

A command is sent again with the body it was first sent with, but for what its step's
``refresh`` renews: a signed link that may have expired while the frontend was down.  The
hosts' journals know a command by its id alone, never by its body: one that ran or runs is
answered from its record (the renewed link unused, its download done or under way), and one
that never arrived runs with the renewed body.

A command whose host is away from the tree (restarting, re-attaching after its agent died,
not yet back under a restarted frontend) is not a failed command: unless the workflow says
otherwise (a launch tries another host instead), the task is *parked*, its step left as sent.
The host monitor wakes it when the host is attached again, and it sends the step once more under
its id; only after ``host_wait_s`` since the step was first sent does "host is down" become the
step's result.  A parked task holds no worker thread.

Hosts that a command did not reach are told to whoever listens for that op (``on_missed``): the
network's convergence owes them their whole state, and sends it when they are back.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

import structlog
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from sci import CommandHandle, Result, SciError, Status, Targets

from .db import Database
from .db.models import Event, Task, TaskStep, utcnow
from .periodic import Periodic

__all__ = ["AWAY", "HostResult", "HostsAway", "Resumer", "Submit", "TaskContext", "TaskEngine", "TaskFailed",
           "Workflow"]

log = structlog.get_logger("frontend.tasks")

T = TypeVar("T")
#: how commands reach the tree: (op, args, targets, timeout, command id or None for a fresh one)
Submit = Callable[[str, Any, Targets, float, str | None], CommandHandle]

ACTIVE = ("pending", "running")
#: the results that say the command never reached its host, or not for long enough to answer
AWAY = ("unreachable", "lost")
#: at most this many of the hosts a parked task waits for are kept, to wake it by
WAKE_HOSTS = 64


class TaskFailed(Exception):
    """Raised by a workflow to end its task as failed, with this text for the user."""


class HostsAway(Exception):
    """Raised where a task must wait for hosts that are away from the tree: it is parked, not failed,
    and run again once any of ``hosts`` is attached (or by the Resumer)."""

    def __init__(self, hosts: list[str], why: str) -> None:
        super().__init__(why)
        self.hosts = hosts[:WAKE_HOSTS]


class Interrupted(Exception):
    """The frontend is stopping: the task is left as it is, for the next start to resume."""


@dataclass(frozen=True)
class HostResult:
    status: str  # ok | error | unreachable | timeout | lost
    message: str = ""
    exit_status: int = 0
    payload: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        return self.message or self.status

    @classmethod
    def of(cls, result: Result) -> "HostResult":
        return cls(result.status.name.lower(), result.message, result.exit_status, result.payload)

    @classmethod
    def load(cls, raw: dict[str, Any]) -> "HostResult":
        return cls(raw["status"], raw.get("message", ""), raw.get("exit_status", 0), raw.get("payload"))

    def dump(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "exit_status": self.exit_status,
                "payload": self.payload}


class Workflow(Protocol):
    """What a kind of task does.  ``run`` must take the same steps, in the same order, given the
    same recorded results: it is run again from the top after a restart."""

    def run(self, ctx: "TaskContext", task: Task) -> None: ...

    def failed(self, session: Session, task: Task, reason: str) -> None:
        """Put the task's resource in its failed state, in the transaction that fails the task."""


class TaskContext:
    def __init__(self, engine: "TaskEngine", task_id: str) -> None:
        self._engine = engine
        self.task_id = task_id
        self._seq = 0

    def _next(self) -> int:
        if self._engine.stopping:
            raise Interrupted("before a new step")
        self._seq += 1
        return self._seq

    def _step(self, session: Session, seq: int) -> TaskStep | None:
        return session.execute(
            select(TaskStep).where(TaskStep.task_id == self.task_id, TaskStep.seq == seq)
        ).scalar_one_or_none()

    def once(self, name: str, decide: Callable[[Session], T]) -> T:
        """Run ``decide`` once in this task's life; its writes and its (JSON) value commit together."""
        seq = self._next()
        with self._engine.db.transaction() as session:
            step = self._step(session, seq)
            if step is not None:
                return step.result["value"]  # type: ignore[index, no-any-return]
            value = decide(session)
            session.add(TaskStep(task_id=self.task_id, seq=seq, name=name, status="done", result={"value": value},
                                 finished_at=utcnow()))
            return value

    def waited_enough(self, since: dt.datetime) -> bool:
        """Whether a wait for hosts that began at ``since`` has lasted ``host_wait_s``."""
        return utcnow() - since >= dt.timedelta(seconds=self._engine.host_wait_s)

    def sent_to(self, name: str) -> list[str]:
        """The hosts this task's command step ``name`` went to, as journalled; none if it was never sent."""
        with self._engine.db.read() as session:
            hosts = session.execute(select(TaskStep.hosts).where(TaskStep.task_id == self.task_id,
                                                                 TaskStep.name == name)).scalar()
        return [str(h) for h in hosts or []]

    def command(self, name: str, op: str, body: dict[str, Any], hosts: list[str],
                timeout: float = 60.0,
                refresh: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                wait_for_hosts: bool = True) -> dict[str, HostResult]:
        """Send ``op`` to ``hosts`` through the tree and return each host's result.

        ``refresh``: applied to the recorded body of a command sent again, to renew what in it
        goes stale with time (recorded too, as what was last sent).
        ``wait_for_hosts``: park the task while any of the hosts is away (up to ``host_wait_s``);
        without it, "host is down" is a result like any other.
        """
        seq = self._next()
        with self._engine.db.transaction() as session:
            step = self._step(session, seq)
            if step is None:
                step = TaskStep(task_id=self.task_id, seq=seq, name=name, status="sent", op=op,
                                cmd_id=f"{self.task_id}.{seq}", hosts=list(hosts), timeout_s=timeout, body=body)
                session.add(step)
                session.flush()
            elif step.status == "done":
                return {h: HostResult.load(r) for h, r in (step.result or {}).items()}
            else:
                if refresh is not None:
                    step.body = refresh(dict(step.body))
                log.info("task_command_resent", task=self.task_id, cmd=step.cmd_id, op=step.op,
                         refreshed=refresh is not None)
            step_id, cmd_id, sent_at = step.id, str(step.cmd_id), step.started_at or utcnow()
            op, body, hosts, timeout = str(step.op), dict(step.body), list(step.hosts), float(step.timeout_s or timeout)
        results = self._engine.send(cmd_id, op, body, hosts, timeout)
        if self._engine.stopping:
            # The answers may be the tree's own "lost" for commands cut off by the shutdown:
            # recording them would fail (or retry) work the hosts are still doing.
            raise Interrupted(cmd_id)
        away = sorted(h for h, r in results.items() if r.status in AWAY)
        if away and wait_for_hosts and self._engine.submit is not None and not self.waited_enough(sent_at):
            raise HostsAway(away, f"{op} waits for {', '.join(away[:3])}{' and others' if len(away) > 3 else ''}: "
                                  f"{results[away[0]].describe()}")
        missed = [h for h, r in results.items() if r.status in AWAY or r.status == "timeout"]
        if missed:
            self._engine.missed(op, missed)
        with self._engine.db.transaction() as session:
            row = session.get(TaskStep, step_id)
            assert row is not None
            row.status, row.finished_at = "done", utcnow()
            row.result = {h: r.dump() for h, r in results.items()}
        return results


class TaskEngine:
    """Runs tasks' workflows on a pool of threads and resumes unfinished ones after a restart."""

    def __init__(self, db: Database, submit: Submit | None, workers: int = 64, host_wait_s: float = 300.0) -> None:
        self.db = db
        #: how commands reach the tree (Frontend.submit); None: a frontend without a tree
        self.submit = submit
        #: how long a step waits for a host that is away before "host is down" is its result
        self.host_wait_s = host_wait_s
        self.workflows: dict[str, Workflow] = {}
        #: set while this frontend is a standby: the tasks its API creates are handed to the leader
        self.hand_over: Callable[[str], None] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task")
        self._running: set[str] = set()
        #: parked tasks, and the hosts whose return wakes them
        self._parked: dict[str, list[str]] = {}
        self._missed: dict[str, Callable[[list[str]], None]] = {}
        self.stopping = False
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def register(self, kind: str, workflow: Workflow) -> None:
        self.workflows[kind] = workflow

    def on_missed(self, op: str, listener: Callable[[list[str]], None]) -> None:
        """Call ``listener`` with the hosts that a task's ``op`` command did not reach (away, or silent);
        one listener an op, the last one set (each term of leadership sets its own)."""
        self._missed[op] = listener

    def missed(self, op: str, hosts: list[str]) -> None:
        listener = self._missed.get(op)
        if listener is not None:
            listener(hosts)

    @property
    def parked(self) -> int:
        with self._lock:
            return len(self._parked)

    def wake(self, attached: Callable[[str], bool]) -> int:
        """Run again the parked tasks of which a host they wait for is ``attached``; how many."""
        with self._lock:
            ready = [task_id for task_id, hosts in self._parked.items() if any(attached(h) for h in hosts)]
        started = [task_id for task_id in ready if self.start(task_id)]
        if started:
            log.info("tasks_woken", tasks=len(started))
        return len(started)

    def create(self, session: Session, kind: str, org_id: str, user_id: str | None, resource_type: str,
               resource_id: str, params: dict[str, Any] | None = None) -> Task:
        """A new pending task, in the caller's transaction; ``start`` it once that commits."""
        if kind not in self.workflows:
            raise ValueError(f"no workflow for task kind {kind!r}")
        task = Task(kind=kind, org_id=org_id, user_id=user_id, resource_type=resource_type,
                    resource_id=resource_id, params=params or {}, status="pending")
        session.add(task)
        session.flush()
        return task

    def start(self, task_id: str) -> bool:
        """Run the task on the pool, unless it runs already; whether it was started here."""
        hand_over = self.hand_over
        if hand_over is not None:
            try:
                hand_over(task_id)
            except Exception:  # the leader's resumer finds it pending within a minute anyway
                log.warning("task_hand_over_failed", task=task_id, exc_info=True)
            return False
        with self._lock:
            if task_id in self._running or self.stopping:
                return False
            self._parked.pop(task_id, None)
            self._running.add(task_id)
        self._pool.submit(self._run, task_id)
        return True

    def resume(self) -> int:
        """Start every unfinished task that does not run: left by a previous run of the frontend, or
        by a database or tree failure in this one (see ``_run``).  Returns how many it started."""
        with self.db.read() as session:
            ids = list(session.execute(select(Task.id).where(Task.status.in_(ACTIVE)).order_by(Task.created_at))
                       .scalars())
        started = [task_id for task_id in ids if self.start(task_id)]
        for task_id in started:
            log.info("task_resumed", task=task_id)
        return len(started)


    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no task is running (tests, and a clean shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def stop(self) -> None:
        """Stop starting steps; tasks in flight stay unfinished in the database and resume at the next start."""
        self.stopping = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def send(self, cmd_id: str, op: str, body: dict[str, Any], hosts: list[str],
             timeout: float) -> dict[str, HostResult]:
        if self.submit is None:
            return {h: HostResult("unreachable", "this frontend runs without a tree") for h in hosts}
        log.info("task_command_sent", cmd=cmd_id, op=op, hosts=len(hosts))
        handle = self.submit(op, body, Targets.to(*hosts), timeout, cmd_id)
        table = handle.wait(timeout + 30)
        results = {h: HostResult.of(table.get(h, Result(Status.LOST, message="no answer"))) for h in hosts}
        failed = {h: r.describe() for h, r in results.items() if not r.ok}
        log.info("task_command_done", cmd=cmd_id, op=op, hosts=len(hosts), failed=len(failed))
        return results

    def _run(self, task_id: str) -> None:
        try:
            self._execute(task_id)
        except Exception:
            # The database or the tree failed under us: leave the task as it is; the Resumer
            # (or the next start of the frontend) runs it again, its done steps replayed.
            log.exception("task_crashed", task=task_id)
        finally:
            with self._idle:
                self._running.discard(task_id)
                self._idle.notify_all()

    def _execute(self, task_id: str) -> None:
        with self.db.transaction() as session:
            task = session.get(Task, task_id)
            if task is None or task.status not in ACTIVE:
                return
            if task.status == "pending":
                task.status = "running"
            kind = task.kind
        workflow = self.workflows[kind]
        log.info("task_running", task=task_id, kind=kind)
        try:
            workflow.run(TaskContext(self, task_id), task)
        except Interrupted as exc:
            log.info("task_interrupted", task=task_id, kind=kind, cmd=str(exc))
            return
        except HostsAway as exc:
            with self._lock:
                self._parked[task_id] = exc.hosts
            log.info("task_parked", task=task_id, kind=kind, reason=str(exc))
            return
        except (OperationalError, SciError) as exc:
            # The database or the tree is away for now, not the task wrong: leave it for the Resumer.
            log.warning("task_paused", task=task_id, kind=kind, error=f"{type(exc).__name__}: {exc}")
            return
        except TaskFailed as exc:
            self._finish(task_id, workflow, str(exc))
        except Exception as exc:
            log.exception("task_workflow_error", task=task_id, kind=kind)
            self._finish(task_id, workflow, f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._finish(task_id, workflow, None)

    def _finish(self, task_id: str, workflow: Workflow, error: str | None) -> None:
        with self.db.transaction() as session:
            task = session.get(Task, task_id)
            assert task is not None
            task.finished_at = utcnow()
            if error is None:
                task.status = "succeeded"
            else:
                task.status, task.error = "failed", error
                workflow.failed(session, task, error)
                session.add(Event(org_id=task.org_id, kind="task.failed", resource_type=task.resource_type,
                                  resource_id=task.resource_id, message=f"{task.kind} failed: {error}"))
        log.info("task_finished", task=task_id, kind=task.kind, status=task.status, error=error)


class Resumer(Periodic):
    """Picks up, every so often, tasks that stopped on a transient failure, so none waits for a restart."""

    name = "task-resumer"

    def __init__(self, engine: TaskEngine, interval: float = 60.0) -> None:
        super().__init__(interval)
        self.engine = engine

    def run_once(self) -> int:
        return self.engine.resume()
