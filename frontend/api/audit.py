"""The audit log: one row for every mutating call under ``/v1``, written once its answer is known,
one for every WebSocket opened (method ``WS``: a live console, from the API or the web
console), written when it is accepted or refused, and one for every read that asks for a view
the log must show (``audit_view``: an admin's view of every organization), its route followed by
that view (``/v1/instances?all_orgs=true``).

Who called (the authenticated caller, set by ``deps``, or what ``identify`` named), from where,
what they asked for (method, route template, the resource in the path), when, how it ended
(status, error code), and which frontend served it (its process, as the frontends registry
names it).  Never the body: it may hold passwords and user data.

The row is written in its own short transaction after the app has answered, so a call's own
transaction never waits for it, and a failed write is logged and costs the call nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import structlog
from fastapi import Request
from sqlalchemy import insert
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..db.models import AuditRecord, utcnow
from ..leadership import holder_id
from ..services import Frontend
from .schemas import V1

__all__ = ["Actor", "AuditLog", "audit_view", "identify"]

log = structlog.get_logger("frontend.api")

MUTATING = ("POST", "PUT", "PATCH", "DELETE")
#: error bodies are small; a longer one is not parsed for its code
_ERROR_BODY_MAX = 16 * 1024
#: where a read's request state names the view that has it recorded
_VIEW = "audit_view"


@dataclass(frozen=True)
class Actor:
    user_id: str
    user_name: str
    org_id: str


def identify(request: Request, actor: Actor) -> None:
    """Name who the call is recorded as, where no token says it (a login)."""
    request.state.audit_actor = actor


def audit_view(request: Request, view: str) -> None:
    """Have this read recorded too, as its route followed by ``?view``."""
    setattr(request.state, _VIEW, view)


@dataclass
class _Answer:
    status: int | None = None
    json: bool = False
    body: bytes = b""

    def error_code(self) -> str | None:
        if self.status is None or self.status < 400 or not self.json:
            return None
        try:
            code = json.loads(self.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None
        return code[:32] if isinstance(code, str) else None


class AuditLog:
    """ASGI middleware: after each POST, PUT, PATCH or DELETE under /v1, and each read given an
    ``audit_view``, a row in the audit log."""

    def __init__(self, app: ASGIApp, frontend: Frontend) -> None:
        self.app = app
        self.frontend = frontend
        #: this process, named as in the frontends registry and the lease
        self.served_by = holder_id(frontend.config.node_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http" or not scope["path"].startswith(V1 + "/"):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        received_at = utcnow()
        answer = _Answer()

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                answer.json = any(k.lower() == b"content-type" and v.startswith(b"application/json")
                                  for k, v in message.get("headers", ()))
            elif message["type"] == "http.response.body" and len(answer.body) < _ERROR_BODY_MAX:
                if answer.status is not None and answer.status >= 400:
                    answer.body += message.get("body", b"")
            await send(message)

        crashed = False
        try:
            await self.app(scope, receive, watch)
        except BaseException:
            # Answered outside this middleware with a 500 (ServerErrorMiddleware) unless already answered.
            crashed = answer.status is None
            raise
        finally:
            if scope["method"] in MUTATING or scope["state"].get(_VIEW):
                record = _record(scope, received_at, 500 if crashed else answer.status or 500,
                                 "internal" if crashed else answer.error_code(), self.served_by)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._write, record)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})
        received_at = utcnow()
        answer = _Answer()
        written = False

        async def write(status: int, error: str | None) -> None:
            nonlocal written
            written = True
            record = _record(scope, received_at, status, error, self.served_by, method="WS")
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._write, record)

        async def watch(message: Message) -> None:
            kind = message["type"]
            if not written and kind == "websocket.accept":
                await write(101, None)
            elif not written and kind == "websocket.close":  # refused before it was accepted
                await write(403, None)
            elif kind == "websocket.http.response.start":
                answer.status = message["status"]
                answer.json = any(k.lower() == b"content-type" and v.startswith(b"application/json")
                                  for k, v in message.get("headers", ()))
            elif kind == "websocket.http.response.body" and len(answer.body) < _ERROR_BODY_MAX:
                answer.body += message.get("body", b"")
                if not written and not message.get("more_body") and answer.status is not None:
                    await write(answer.status, answer.error_code())
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if not written:
                await write(500, "internal")

    def _write(self, record: dict[str, Any]) -> None:
        try:
            with self.frontend.db.transaction() as session:
                session.execute(insert(AuditRecord).values(**record))
        except Exception:
            log.exception("audit_write_failed", method=record["method"], route=record["route"],
                          status=record["status"], user=record["user_id"])


def _record(scope: Scope, received_at: dt.datetime, status: int, error: str | None,
            served_by: str, method: str | None = None) -> dict[str, Any]:
    state = scope.get("state", {})
    who = state.get("audit_actor") or state.get("caller")
    route = getattr(scope.get("route"), "path", None) or scope["path"]
    if view := state.get(_VIEW):
        route += f"?{view}"
    params = scope.get("path_params") or {}
    client = scope.get("client")
    return {
        "created_at": received_at,
        "user_id": who.user_id if who else None,
        "user_name": who.user_name if who else None,
        "org_id": who.org_id if who else None,
        "source": client[0][:64] if client else None,
        "method": method or scope["method"],
        "route": route[:255],
        "resource_id": str(list(params.values())[-1])[:64] if params else None,
        "status": status,
        "error": error,
        "frontend": served_by[:255],
    }
