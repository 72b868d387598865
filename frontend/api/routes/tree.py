"""The message tree as the operator sees it: its nodes, and a ping of the hosts (admin only)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from sci import TargetError, Targets, TreeRoot

from ...auth import Role
from ...errors import Invalid
from ..deps import CallerDep, FrontendDep, leading_tree
from ..refusals import refusals
from ..schemas import V1, Input

router = APIRouter(prefix=V1, tags=["tree"])


class NodeView(BaseModel):
    node_id: str
    role: str
    parent: str | None
    level: int
    children: int
    heartbeat_age: float | None
    state: str


class TreeView(BaseModel):
    fanout: int = Field(description="most children the tree gives a node; a relay above it carries the "
                                    "orphans of a failed agent")
    nodes: list[NodeView]


class Ping(Input):
    hosts: list[str] = Field(default_factory=list, max_length=100_000, description="none: every host")
    group: str | None = Field(default=None, max_length=64)
    timeout: float = Field(default=5.0, gt=0, le=300)

    @model_validator(mode="after")
    def _one_target(self) -> "Ping":
        if self.hosts and self.group:
            raise ValueError("name hosts or a group, not both")
        return self


class PingResult(BaseModel):
    status: str
    message: str
    latency_s: float | None


class PingView(BaseModel):
    results: dict[str, PingResult]


def _tree(frontend: FrontendDep) -> TreeRoot:
    return leading_tree(frontend, "asking the tree")


@router.get("/tree", response_model=TreeView, summary="Every node of the message tree and its state",
            responses=refusals(403, 503))
def show_tree(caller: CallerDep, frontend: FrontendDep) -> TreeView:
    caller.require(Role.admin, "reading the tree")
    tree = _tree(frontend)
    nodes = tree.tree_status(timeout=2.0)
    return TreeView(fanout=tree.settings.fanout, nodes=[NodeView(**dataclasses.asdict(n)) for n in nodes])


@router.post("/tree/ping", response_model=PingView, summary="Ping hosts through the tree and time each answer",
             responses=refusals(503))
def ping(body: Ping, caller: CallerDep, frontend: FrontendDep) -> PingView:
    caller.require(Role.admin, "pinging hosts")
    _tree(frontend)
    try:
        targets = Targets.to(*body.hosts) if body.hosts else Targets.named(body.group) if body.group else Targets.all()
        handle = frontend.submit("ping", {}, targets, body.timeout)
    except TargetError as exc:
        raise Invalid(str(exc), "group" if body.group else "hosts") from None
    table = handle.wait(body.timeout + 5)
    return PingView(results={h: PingResult(status=r.status.name.lower(), message=r.message,
                                           latency_s=handle.latency(h)) for h, r in table.items()})
