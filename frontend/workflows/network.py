"""Network tasks: push the desired state of some networks to the hypervisors concerned.

A ``network.sync`` task (params: ``networks``, the ids changed; ``hosts``, hosts that carried
them before the change; ``only``, if given, the hosts the change concerns among all these: a
security group's change reaches the hosts of its ports, not every host of their networks)
builds one ``net.sync`` body and multicasts it to the networks' hosts and to those.  A host that
answers with an error fails the task with its reason; a host that is away or does not answer
does not, nor does the task wait for it: it is owed its whole state (``netconverge``), sent
when it is attached again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ..db.models import Task
from ..hostalias import mention
from ..hostops import HOST_OP_TIMEOUT
from ..netstate import NET_SYNC, sync
from ..tasks import HostResult, TaskContext, TaskFailed, Workflow

__all__ = ["errors", "push", "workflows"]


def push(ctx: TaskContext, name: str, networks: list[str], extra_hosts: list[str] | None = None,
         only: list[str] | None = None) -> dict[str, HostResult]:
    """One journalled sync of ``networks``: the body is built once in the task's life, and sent under
    one command id, so a frontend restarted mid-push resends the same body, never a newer one."""
    plan = ctx.once(f"{name}.plan", lambda session: _plan(session, networks, list(extra_hosts or []), only))
    if not plan["hosts"]:
        return {}
    return ctx.command(name, NET_SYNC, plan["body"], plan["hosts"], timeout=HOST_OP_TIMEOUT, wait_for_hosts=False)


def _plan(session: Session, networks: list[str], extra_hosts: list[str], only: list[str] | None) -> dict[str, Any]:
    body, hosts = sync(session, networks, extra_hosts)
    return {"body": body, "hosts": [h for h in hosts if only is None or h in only]}


def errors(results: dict[str, HostResult]) -> list[str]:
    """The hosts that refused or failed the sync, with why (not those that were away: they catch up)."""
    return [f"{mention(host)}: {result.describe()}" for host, result in sorted(results.items())
            if result.status == "error"]


class NetworkSync:
    def run(self, ctx: TaskContext, task: Task) -> None:
        only = task.params.get("only")
        failed = errors(push(ctx, "sync", list(task.params.get("networks", [])), list(task.params.get("hosts", [])),
                             list(only) if only is not None else None))
        if failed:
            raise TaskFailed("; ".join(failed))

    def failed(self, session: Session, task: Task, reason: str) -> None:
        """Nothing to mark: the state is what the user asked for; the hosts catch up at the next sync."""


def workflows() -> dict[str, Workflow]:
    return {"network.sync": NetworkSync()}
