"""The FastAPI application: routers, error shapes and the OpenAPI description."""

from __future__ import annotations

import time
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..console import PATH as CONSOLE_PATH, UPLOAD as CONSOLE_UPLOAD, create_console
from ..errors import ApiError, Conflict, Invalid
from ..services import Frontend
from . import health, routes
from .audit import AuditLog
from .bodylimit import BodyLimit
from .idempotency import Idempotency
from .refusals import ApiApp
from .routes.images import STREAMED_UPLOAD
from .swaggerui import mount_docs

__all__ = ["create_app"]

log = structlog.get_logger("frontend.api")

DESCRIPTION = """
cloudland's REST API.  Every path is under `/v1`; every call but `POST /v1/tokens` needs
`Authorization: Bearer <token>`.  Every query is scoped to the caller's organization: another
organization's resources answer 404, exactly like ids that do not exist.  Admins may ask the
lists an operator needs (instances, volumes, networks, ports, floating IPs, images, events,
tasks) for every organization's with `all_orgs=true`; anyone else is refused (403, field
`all_orgs`), and each such view is recorded in the audit log.

Errors are JSON: `{"error": {"code", "message", "field", "reason"}}` with `code` one of
`invalid` (422), `unauthenticated` (401), `forbidden` (403), `not_found` (404), `conflict` (409),
`quota_exceeded` (409), `too_large` (413), `rate_limited` (429), `unavailable` (503),
`not_leading` (503: a standby frontend, where several run, was asked for what only the leader
does, such as a call through the tree or an image upload; ask another frontend).

Request bodies are limited in size (1 MiB unless the operator says otherwise; image files have
their own limit).  Logins are rate-limited per client address and, when they fail, per user name;
calls with a token are rate-limited per token.  A `429` carries `Retry-After`: the seconds to
wait.  Every `POST`, `PUT`, `PATCH` and `DELETE` (refused ones too) is recorded in the audit log,
which admins read at `GET /v1/audit`, and so is every `GET` with `all_orgs=true`.

A change (`POST`, `PUT`, `PATCH`, `DELETE`) may carry an `Idempotency-Key` header, a value of
the client's own (1 to 255 printable characters; a UUID will do). Sent again with the same key,
to this frontend or another, the call is done once: a repeat after the first answered gets the
same answer back with `Idempotent-Replayed: true`; one while the first has made its change but
not answered is refused (409, field `Idempotency-Key`); the key used for another method or path
is refused (422). A call that changed nothing leaves no trace and runs again. Keys belong to the
caller's token and are kept a day. Logging in and issuing an enrolment token ignore the header:
their answers are secrets, which the database does not keep.

Long operations answer `202 Accepted` with a task; follow it at `GET /v1/tasks/{id}` until its
status is `succeeded` or `failed`.

Times are answered in UTC with their zone (`2026-05-01T12:00:03.250000Z`).  A time given as a
filter (`since`) may carry any offset; one without an offset is taken as UTC.
"""


def _field(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def create_app(frontend: Frontend) -> FastAPI:
    app = ApiApp(title="cloudland", version="1", description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.frontend = frontend

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        log.info("api_refused", method=request.method, path=request.url.path, code=exc.code, field=exc.field,
                 reason=exc.reason)
        return JSONResponse(exc.body(), status_code=exc.http_status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = _field(tuple(first.get("loc", ())))
        reason = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            reason = "unknown field"
        if first.get("type") == "json_invalid":  # its loc is the offset in the body, not a field
            field, reason = None, "the body is not valid JSON"
        log.info("api_refused", method=request.method, path=request.url.path, code="invalid", field=field,
                 reason=reason)
        body = {"error": {"code": "invalid", "message": f"{field}: {reason}" if field else reason,
                          "field": field, "reason": reason}}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (no such route, wrong method) in the API's error shape.
        if exc.status_code == 400:  # FastAPI's for a body it cannot decode (not UTF-8): as invalid as bad JSON
            return await api_error(request, Invalid("the body is not valid JSON"))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        reason = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        body = {"error": {"code": code, "message": reason, "field": None, "reason": reason}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # A constraint the checks before it did not foresee, or a race they lost (two creates of one name).
        log.info("api_refused", method=request.method, path=request.url.path, code="conflict",
                 reason=str(exc.orig).splitlines()[0][:200])
        return await api_error(request, Conflict("the change conflicts with other data (another request may "
                                                 "have made or used the same thing); look and try again"))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api_crashed", method=request.method, path=request.url.path)
        reason = "internal error; the frontend's log has the details"
        return JSONResponse({"error": {"code": "internal", "message": reason, "field": None, "reason": reason}},
                            status_code=500)

    if frontend is not None:  # docgen builds the app without one, for its OpenAPI description only
        app.add_middleware(BodyLimit, max_bytes=frontend.config.api.max_body_bytes,
                           streamed=[STREAMED_UPLOAD, CONSOLE_UPLOAD])
        app.add_middleware(Idempotency, db=frontend.db,
                           secret_answers=[("POST", "/v1/tokens"), ("POST", "/v1/hypervisors/enrolments")])

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        started = time.monotonic()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route's template, not the path: ids in paths would make a series per resource.
        template = getattr(route, "path", "unmatched")
        frontend.metrics.observe_request(request.method, template, response.status_code, time.monotonic() - started)
        return response

    # Added innermost first: the metrics count the body limit's answers, and the audit log sees every one.
    app.add_middleware(AuditLog, frontend=frontend)

    for router in routes.ALL:
        app.include_router(router)
    app.include_router(health.router)
    mount_docs(app)
    app.mount(CONSOLE_PATH, create_console(app))
    return app
