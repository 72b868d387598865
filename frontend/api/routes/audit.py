"""The audit log, for admins: every mutating call and every view of all organizations, who made it and how
it ended (see ``api/audit.py``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import or_, select

from ...auth import Role
from ...db.models import AuditRecord
from ..deps import CallerDep, FrontendDep
from ..refusals import refusals
from ..schemas import V1, Items, Moment, Ref, Text, UtcTime

router = APIRouter(prefix=V1, tags=["audit"])


class AuditView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: Moment
    user_id: str | None
    user_name: str | None
    org_id: str | None
    source: str | None
    method: str
    route: str
    resource_id: str | None
    status: int
    error: str | None
    #: the frontend process that served it (node id, host, process id); null for older records
    frontend: str | None


@router.get("/audit", response_model=Items[AuditView],
            summary="List the audit log, newest first: every POST, PUT, PATCH and DELETE, refused ones too, "
                    "every WebSocket opened (method WS: live consoles), and every list asked for with all_orgs=true "
                    "(method GET, its route ending in ?all_orgs=true) (admins)",
            responses=refusals(403))
def list_audit(caller: CallerDep, frontend: FrontendDep,
               user: Ref | None = Query(default=None, description="a user's name or id"),
               method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "WS"] | None = None,
               status: int | None = Query(default=None, ge=100, le=599),
               since: UtcTime | None = None,
               path_prefix: Text | None = Query(default=None, max_length=255,
                                               description="calls whose route starts with it, e.g. /v1/instances"),
               limit: int = Query(default=100, ge=1, le=1000)) -> Items[AuditView]:
    caller.require(Role.admin, "reading the audit log")
    query = select(AuditRecord).order_by(AuditRecord.created_at.desc(), AuditRecord.id.desc()).limit(limit)
    if user is not None:
        query = query.where(or_(AuditRecord.user_name == user, AuditRecord.user_id == user))
    if method is not None:
        query = query.where(AuditRecord.method == method)
    if status is not None:
        query = query.where(AuditRecord.status == status)
    if since is not None:
        query = query.where(AuditRecord.created_at >= since)
    if path_prefix is not None:
        query = query.where(AuditRecord.route.startswith(path_prefix, autoescape=True))
    with frontend.db.read() as session:
        return Items(items=[AuditView.model_validate(r) for r in session.execute(query).scalars()])
