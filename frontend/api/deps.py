"""What every endpoint may ask for: the frontend's services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sci import TreeRoot

from ..auth import Caller, authenticate
from ..errors import NotLeading, Unavailable
from ..services import Frontend

__all__ = ["CallerDep", "FrontendDep", "TokenOrLinkDep", "leading_tree", "refuse_on_standby"]

_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/tokens")


def _frontend(request: Request) -> Frontend:
    frontend: Frontend = request.app.state.frontend
    return frontend


def refuse_on_standby(frontend: Frontend, doing: str) -> None:
    """NotLeading if this frontend is a standby (its root built, not started, and no lease held)."""
    tree = frontend.tree
    if tree is not None and not tree.running and frontend.generation is None:
        raise NotLeading(doing)


def leading_tree(frontend: Frontend, doing: str) -> TreeRoot:
    """The tree's root, for a call that acts through it (``doing`` names it in the refusal)."""
    refuse_on_standby(frontend, doing)
    tree = frontend.tree
    if tree is None:
        raise Unavailable("this frontend runs without a message tree")
    if not tree.running:
        raise Unavailable("the tree's root is not running")
    return tree


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
