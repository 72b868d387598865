"""What every endpoint may ask for: the frontend's services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..auth import Caller, authenticate
from ..services import Frontend

__all__ = ["CallerDep", "FrontendDep", "TokenOrLinkDep"]

_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/tokens")


def _frontend(request: Request) -> Frontend:
    frontend: Frontend = request.app.state.frontend
    return frontend


def _caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    header = f"Bearer {credentials.credentials}" if credentials else None
    frontend = _frontend(request)
    with frontend.db.read() as session:
        caller = authenticate(session, header)
    request.state.caller = caller
    frontend.rate_limits.admit_call(caller.token_id)
    return caller


def _caller_if_token(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller | None:
    """The caller, for a route a hypervisor may call with a signed link instead of a token: None without a token."""
    return None if credentials is None else _caller(request, credentials)


FrontendDep = Annotated[Frontend, Depends(_frontend)]
CallerDep = Annotated[Caller, Depends(_caller)]
#: the caller if the request has a token; the route checks its signed link otherwise
TokenOrLinkDep = Annotated[Caller | None, Depends(_caller_if_token)]
