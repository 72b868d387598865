"""Events: what happened that an operator or tenant may want to know (drift, hosts down, failed tasks)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import false, select

from ...db.models import Event
from ...hostalias import AS_SEEN, alias, seen, shown
from ..allorgs import AllOrgsDep
from ..deps import CallerDep, FrontendDep
from ..lookup import owned
from ..schemas import V1, Items, Moment, Ref, UtcTime

router = APIRouter(prefix=V1, tags=["events"])


class EventView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: Moment
    org_id: str
    kind: str
    host: str | None
    resource_type: str | None
    resource_id: str | None
    message: str = Field(description=f"What happened; {AS_SEEN}")


@router.get("/events", response_model=Items[EventView],
            summary="List events, newest first (drift.*, host.*, task.failed); hosts' events belong to admins")
def list_events(caller: CallerDep, frontend: FrontendDep, all_orgs: AllOrgsDep,
                kind: str | None = Query(default=None, pattern="^[a-z][a-z_.]{0,31}$",
                                         description="e.g. drift, host.down"),
                host: Ref | None = Query(default=None, description="a hypervisor's name (tenants: its alias)"),
                since: UtcTime | None = None, limit: int = Query(default=100, ge=1, le=1000)) -> Items[EventView]:
    with frontend.db.read() as session:
        query = owned(Event, caller, all_orgs=all_orgs).order_by(Event.created_at.desc()).limit(limit)
        if kind is not None:
            # "drift" matches drift.vanished and drift.unknown
            query = query.where((Event.kind == kind) | Event.kind.startswith(kind + "."))
        if host is not None:
            if not caller.is_admin:
                # A tenant knows hosts by their aliases only: the host of its events that the alias names.
                hosts = session.execute(select(Event.host).distinct().where(Event.org_id == caller.org_id,
                                                                            Event.host.is_not(None))).scalars()
                host = next((h for h in hosts if h is not None and alias(caller.org_id, h) == host), None)
            query = query.where(Event.host == host) if host is not None else query.where(false())
        if since is not None:
            query = query.where(Event.created_at >= since)
        views = [EventView.model_validate(e) for e in session.execute(query).scalars()]
    return Items(items=[v.model_copy(update={"host": seen(v.host, v.org_id, caller.is_admin) if v.host else None,
                                             "message": shown(v.message, v.org_id, caller.is_admin)})
                        for v in views])
