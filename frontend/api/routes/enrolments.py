"""Which nodes may join the tree (admin): one-time tokens a new backend or agent presents once to
have its CURVE key enrolled, and revocation, which cuts a node off for good."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from sci import Security, TreeRoot

from ... import enrolment
from ...auth import Role
from ...db.models import Enrolment, utcnow
from ...errors import Conflict, Unavailable
from ..deps import CallerDep, FrontendDep, leading_tree
from ..refusals import refusals
from ..schemas import V1, Input, Items, Moment, Name

router = APIRouter(prefix=V1, tags=["hypervisors"])


class EnrolmentCreate(Input):
    name: Name = Field(description="the new node's node_id")
    role: Literal["backend", "agent"] = "backend"
    ttl_s: int = Field(default=3600, ge=60, le=enrolment.MAX_TTL_S, description="seconds the token stays valid")


class EnrolmentIssued(BaseModel):
    id: str
    name: str
    role: str
    token: str = Field(description="cl1.<secret>.<root public key>: shown this once; the node presents it once")
    expires_at: Moment
    registrar: str = Field(description="the tree endpoint the node joins through: its `frontend:` setting")


class EnrolmentView(BaseModel):
    id: str
    name: str
    role: str
    state: enrolment.EnrolmentState
    created_at: Moment
    expires_at: Moment
    used_at: Moment | None
    #: the admin who issued it
    created_by: str | None


class NodeKeyView(BaseModel):
    name: str
    role: str
    public_key: str
    enrolled_at: Moment
    revoked_at: Moment | None


def _secure_tree(frontend: FrontendDep) -> tuple[TreeRoot, Security]:
    tree = frontend.tree
    if tree is None:
        raise Unavailable("this frontend runs without a message tree")
    if tree.security is None:
        # The operator's choice, not a part that is down: asking again will not help.
        raise Conflict("this frontend's tree runs without CURVE (tree.curve: false): nodes join without enrolment, "
                       "and none can be revoked")
    return tree, tree.security


@router.post("/hypervisors/enrolments", status_code=201, response_model=EnrolmentIssued,
             summary="Issue a one-time token that enrols a new backend or agent in the tree (admin)",
             responses=refusals(503))
def create_enrolment(body: EnrolmentCreate, caller: CallerDep, frontend: FrontendDep) -> EnrolmentIssued:
    caller.require(Role.admin, "enrolling a node")
    tree, security = _secure_tree(frontend)
    issued = enrolment.issue(frontend.db, security.keypair.public, tree.node_id, body.name, body.role, body.ttl_s,
                             caller.user_id)
    row = issued.enrolment
    return EnrolmentIssued(id=row.id, name=row.name, role=row.role, token=issued.token, expires_at=row.expires_at,
                           registrar=tree.endpoint)


@router.get("/hypervisors/enrolments", response_model=Items[EnrolmentView],
            summary="List enrolment tokens, pending, used and expired, newest first; never their secrets (admin)",
            responses=refusals(403))
def list_enrolments(caller: CallerDep, frontend: FrontendDep) -> Items[EnrolmentView]:
    caller.require(Role.admin, "listing enrolments")
    with frontend.db.read() as session:
        rows = session.execute(select(Enrolment).order_by(Enrolment.created_at.desc(), Enrolment.id)).scalars().all()
    now = utcnow()
    return Items(items=[EnrolmentView(id=r.id, name=r.name, role=r.role, state=enrolment.state_of(r, now),
                                      created_at=r.created_at, expires_at=r.expires_at, used_at=r.used_at,
                                      created_by=r.created_by) for r in rows])


@router.post("/hypervisors/{name}/revoke", response_model=NodeKeyView,
             summary="Revoke a backend's or agent's key: cut off from the tree at once and for good, and "
                     "disabled for new instances (admin)",
             responses=refusals(503))
def revoke_node(name: Name, caller: CallerDep, frontend: FrontendDep) -> NodeKeyView:
    caller.require(Role.admin, "revoking a node")
    leading_tree(frontend, "revoking a node's key")  # the leader's root cuts the node off
    tree, _security = _secure_tree(frontend)
    row = enrolment.revoke(frontend.db, tree, name, caller.user_id)
    return NodeKeyView(name=row.node_id, role=row.role, public_key=row.public_key, enrolled_at=row.enrolled_at,
                       revoked_at=row.revoked_at)
