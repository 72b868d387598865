"""``task``: long operations, their steps and what each host answered."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, when
from ..resource import ALL_ORGS, Resource
from ..session import api, emit, json_option
from ..tasks import print_task

__all__ = ["group"]


def _resource(task: dict[str, Any]) -> str:
    return f"{task.get('resource_type')} {task.get('resource_id')}"


TASK = Resource("task", "tasks", (
    Column("ID", "id"), Column("KIND", "kind"), Column("STATUS", "status"), Column("RESOURCE", _resource),
    Column("CREATED", "created_at", when), Column("FINISHED", "finished_at", when), Column("ERROR", "error"),
), ident="id")


@click.group("task")
def group() -> None:
    """Tasks: what long operations did, step by step, host by host."""


TASK.add_list(group, click.option("--resource", metavar="ID", help="Only tasks on this resource."),
              click.option("--status", type=click.Choice(["pending", "running", "succeeded", "failed"])), ALL_ORGS)


@group.command()
@TASK.argument(metavar="ID")
@json_option
@click.pass_context
def show(ctx: click.Context, ref: str) -> None:
    """Show a task: each step, each host's result and the error text."""
    emit(ctx, api(ctx).get(TASK.path(ref)), print_task)
