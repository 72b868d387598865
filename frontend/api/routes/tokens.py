"""Logging in: ``POST /v1/tokens`` trades a user name and password for a bearer token."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from ...auth import issue_token, login, revoke_token
from ..deps import CallerDep, FrontendDep
from ..schemas import V1, Input

router = APIRouter(prefix=V1, tags=["auth"])


class Login(Input):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenView(BaseModel):
    token: str
    expires_at: dt.datetime
    user_id: str
    org_id: str
    role: str


class WhoAmI(BaseModel):
    user_id: str
    user_name: str
    org_id: str
    role: str


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenView,
             summary="Log in: get a bearer token")
def create_token(body: Login, frontend: FrontendDep) -> TokenView:
    ttl = dt.timedelta(seconds=frontend.config.api.token_ttl_s)
    with frontend.db.transaction() as session:
        user = login(session, body.username, body.password)
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
