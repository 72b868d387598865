"""Logging in: ``POST /v1/tokens`` trades a user name and password for a bearer token."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from ...auth import issue_token, login, revoke_token
from ...db.models import User
from ...errors import Unauthenticated
from ..audit import Actor, identify
from ..deps import CallerDep, FrontendDep
from ..refusals import refusals
from ..schemas import V1, Input, Moment, Name

router = APIRouter(prefix=V1, tags=["auth"])


class Login(Input):
    username: Name
    password: str = Field(min_length=1, max_length=1024)


class TokenView(BaseModel):
    token: str
    expires_at: Moment
    user_id: str
    org_id: str
    role: str


class WhoAmI(BaseModel):
    user_id: str
    user_name: str
    org_id: str
    role: str


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenView,
             summary="Log in: get a bearer token", responses=refusals(401, 429))
def create_token(body: Login, request: Request, frontend: FrontendDep) -> TokenView:
    ttl = dt.timedelta(seconds=frontend.config.api.token_ttl_s)
    frontend.rate_limits.admit_login(request.client.host if request.client else "", body.username)
    with frontend.db.transaction() as session:
        try:
            user = login(session, body.username, body.password)
        except Unauthenticated:
            # The audit log names the account a failed login tried, if there is one: a name that
            # is no account's may be a password typed into the wrong field, and is not kept.
            tried = session.execute(select(User).where(User.name == body.username)).scalar_one_or_none()
            if tried is not None:
                identify(request, Actor(tried.id, tried.name, tried.org_id))
            raise
        frontend.rate_limits.login_succeeded(body.username)
        identify(request, Actor(user.id, user.name, user.org_id))
        secret, token = issue_token(session, user, ttl)
        return TokenView(token=secret, expires_at=token.expires_at, user_id=user.id, org_id=user.org_id,
                         role=user.role)


@router.delete("/tokens/current", status_code=status.HTTP_204_NO_CONTENT, summary="Log out: revoke this token")
def delete_token(caller: CallerDep, frontend: FrontendDep) -> None:
    with frontend.db.transaction() as session:
        revoke_token(session, caller.token_id)


@router.get("/whoami", response_model=WhoAmI, summary="Who the token belongs to")
def whoami(caller: CallerDep) -> WhoAmI:
    return WhoAmI(user_id=caller.user_id, user_name=caller.user_name, org_id=caller.org_id, role=caller.role.label)
