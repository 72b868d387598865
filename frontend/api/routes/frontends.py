"""The frontends registry, for admins: every frontend process, whether it leads, and when it was
last heard of (see ``frontend/registry.py``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from ...auth import Role
from ...registry import GONE_AFTER_S, seen
from ..deps import CallerDep, FrontendDep
from ..refusals import refusals
from ..schemas import V1, Items, Moment

router = APIRouter(prefix=V1, tags=["frontends"])


class FrontendView(BaseModel):
    #: the process: node id, host and process id (the lease's holder while it leads)
    holder: str
    node_id: str
    api_url: str | None
    #: leader | standby, at its last attempt to take or renew the lease (on SQLite the one frontend leads)
    role: str
    #: the lease's generation it leads under (0 on SQLite); null for a standby
    generation: int | None
    started_at: Moment
    last_seen: Moment
    #: seconds since it last wrote its row, by the database's clock (a leader's: its lease's age)
    seen_age_s: float
    #: gone: not heard of for a while (killed, or cut off from the database)
    status: Literal["up", "gone"]


@router.get("/frontends", response_model=Items[FrontendView],
            summary=f"List the frontends, the leader first: role, generation, and when each was last heard of "
                    f"(gone after {GONE_AFTER_S:g} s of silence; forgotten after a day) (admins)",
            responses=refusals(403))
def list_frontends(caller: CallerDep, frontend: FrontendDep) -> Items[FrontendView]:
    caller.require(Role.admin, "listing the frontends")
    return Items(items=[FrontendView(holder=s.row.holder, node_id=s.row.node_id, api_url=s.row.api_url,
                                     role=s.row.role, generation=s.row.generation,
                                     started_at=s.row.started_at, last_seen=s.row.last_seen,
                                     seen_age_s=round(s.seen_age_s, 3), status=s.status)
                        for s in seen(frontend.db)])
