"""Tasks: what long operations did, step by step, with each host's fate."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ...auth import Caller
from ...db.models import Task
from ...hostalias import AS_SEEN, alias, shown
from ..allorgs import AllOrgsDep
from ..deps import CallerDep, FrontendDep
from ..lookup import get_owned, owned
from ..schemas import V1, Items, Moment, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["tasks"])


class StepView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    name: str
    status: str
    op: str | None
    cmd_id: str | None
    hosts: list[str]
    #: host -> {status, message, exit_status, payload} for a command; {"value": ...} for a decision
    result: dict[str, Any] | None
    started_at: Moment
    finished_at: Moment | None


class TaskView(ResourceView):
    kind: str
    resource_type: str
    resource_id: str
    error: str | None = Field(description=f"Why it failed; {AS_SEEN}")
    finished_at: Moment | None
    steps: list[StepView] = []


V = TypeVar("V")


class Accepted(BaseModel, Generic[V]):
    """The answer to a long operation: the task that carries it out, and the resource as it is now."""

    task: TaskView
    resource: V | None = None


def task_view(task: Task, caller: Caller, steps: bool = True) -> TaskView:
    """The task as ``caller`` may see it: tenants get hypervisors' aliases instead of their names."""
    view = TaskView.model_validate(task, from_attributes=True) if steps else TaskView(
        id=task.id, org_id=task.org_id, status=task.status, created_at=task.created_at, updated_at=task.updated_at,
        kind=task.kind, resource_type=task.resource_type, resource_id=task.resource_id, error=task.error,
        finished_at=task.finished_at)
    seen_by: dict[str, Any] = {"error": shown(task.error, task.org_id, caller.is_admin)}
    if not caller.is_admin:
        seen_by["steps"] = [_for_tenant(task.org_id, step) for step in view.steps]
    return view.model_copy(update=seen_by)


def _for_tenant(org_id: str, step: StepView) -> StepView:
    if step.op is None:  # a decision: placements name hosts, so tenants see only that one was made
        result = {"value": alias(org_id, step.result["value"]["name"])} if step.name.startswith("place") and \
            step.result and isinstance(step.result.get("value"), dict) else step.result
        return step.model_copy(update={"result": result})
    return step.model_copy(update={
        "hosts": [alias(org_id, h) for h in step.hosts],
        "result": {alias(org_id, h): r for h, r in step.result.items()} if step.result else step.result})


@router.get("/tasks", response_model=Items[TaskView], summary="List recent tasks (newest first, without steps)")
def list_tasks(caller: CallerDep, frontend: FrontendDep, all_orgs: AllOrgsDep, resource: Ref | None = None,
               status: str | None = Query(default=None, pattern="^(pending|running|succeeded|failed)$"),
               limit: int = Query(default=100, ge=1, le=1000)) -> Items[TaskView]:
    with frontend.db.read() as session:
        query = owned(Task, caller, all_orgs=all_orgs).order_by(Task.created_at.desc()).limit(limit)
        if resource is not None:
            query = query.where(Task.resource_id == resource)
        if status is not None:
            query = query.where(Task.status == status)
        return Items(items=[task_view(t, caller, steps=False) for t in session.execute(query).scalars()])


@router.get("/tasks/{task_id}", response_model=TaskView, summary="Show a task with its steps and per-host results")
def show_task(task_id: Ref, caller: CallerDep, frontend: FrontendDep) -> TaskView:
    with frontend.db.read() as session:
        return task_view(get_owned(session, Task, task_id, caller, "task"), caller)


__all__ = ["Accepted", "TaskView", "router", "task_view"]
