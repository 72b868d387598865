"""Long operations: the API answers ``202 {"task", "resource"}``; ``--wait`` follows the task.

While waiting, one progress line (the task's status and its latest step) goes to stderr,
rewritten in place on a terminal, a new line per change otherwise.  At the end the resource
as it now is (or, if there is none, the task) goes to stdout; a failed task exits 1.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import click

from .client import Api, ClctlError, url
from .output import ProgressLine, echo_json, print_record, table, when
from .session import emit, json_mode

__all__ = ["finish", "follow", "print_task", "progress_line"]

TERMINAL = ("succeeded", "failed")
#: polls start quick (most tasks take a second or two) and slow down for the long ones
FIRST_POLL_S = 0.25
MAX_POLL_S = 3.0


def progress_line(task: dict[str, Any]) -> str:
    line = f"task {task.get('id')} {task.get('kind', '')}: {task.get('status')}"
    steps = task.get("steps") or []
    if steps:
        step = steps[-1]
        line += f"; step {step.get('seq')} {step.get('name')} ({step.get('status')})"
        hosts = step.get("hosts") or []
        if len(hosts) == 1:
            line += f" on {hosts[0]}"
        elif hosts:
            line += f" on {len(hosts)} hosts"
    return line


def follow(api: Api, task: dict[str, Any]) -> dict[str, Any]:
    """Poll the task until it succeeds or fails; returns it as it ended."""
    progress = ProgressLine()
    interval = FIRST_POLL_S
    try:
        while True:
            progress.show(progress_line(task))
            if task.get("status") in TERMINAL:
                return task
            time.sleep(interval)
            interval = min(interval * 1.5, MAX_POLL_S)
            task = api.get(url("tasks", str(task["id"])))
    except KeyboardInterrupt:
        progress.end()
        click.echo(f"stopped waiting; the task goes on: clctl task show {task.get('id')}", err=True)
        raise
    finally:
        progress.end()


def print_task(task: dict[str, Any]) -> None:
    """The task, then each step and what each of its hosts answered."""
    print_record(task, skip=("steps",))
    for step in task.get("steps") or []:
        hosts = step.get("hosts") or []
        what = step.get("op") or ""
        if hosts:
            what = f"{what} on {', '.join(map(str, hosts))}".strip()
        click.echo(f"step {step.get('seq')} {step.get('name')}{f' ({what})' if what else ''}: {step.get('status')}")
        # A command's result maps each host to its fate; a decision's ({"value": ...}) is the workflow's own.
        results = (step.get("result") or {}) if step.get("op") else {}
        if isinstance(results, dict) and results:
            rows = [[str(host), str(r.get("status")), f"exit {r.get('exit_status')}" if r.get("exit_status") else "",
                     str(r.get("message") or "")] for host, r in sorted(results.items()) if isinstance(r, dict)]
            for line in table(["HOST", "STATUS", "EXIT", "MESSAGE"], rows).splitlines():
                click.echo(f"  {line}")


def finish(ctx: click.Context, api: Api, answer: Any, *, wait: bool, show: Callable[[dict[str, Any]], None],
           collection: str | None) -> None:
    """Print the outcome of a call that may have started a task.

    ``collection`` (``"instances"``) is where the task's resource is read back once it ends;
    None when there is nothing to read back (a delete).
    """
    if not (isinstance(answer, dict) and isinstance(answer.get("task"), dict)):
        # The API did it at once and answered the resource itself.
        if answer is not None:
            emit(ctx, answer, show)
        return
    task, resource = answer["task"], answer.get("resource")
    if not wait:
        if json_mode(ctx):
            echo_json(answer)
            return
        if isinstance(resource, dict):
            show(resource)
        click.echo(f"task {task.get('id')} ({task.get('kind')}) is {task.get('status')}; "
                   f"follow it with 'clctl task show {task.get('id')}' or pass --wait")
        return
    final = follow(api, task)
    if final.get("status") == "failed":
        emit(ctx, final, print_task)
        raise ClctlError(f"task {final.get('id')} ({final.get('kind')}) failed at {when(final.get('finished_at'))}: "
                         f"{final.get('error') or 'no reason given'}")
    ident = resource.get("id") if isinstance(resource, dict) else final.get("resource_id")
    if collection and ident:
        try:
            current = api.get(url(collection, str(ident)))
        except ClctlError as exc:
            if exc.status != 404:
                raise
        else:
            emit(ctx, current, show)
            return
    emit(ctx, final, print_task)
