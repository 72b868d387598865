"""What every page of the console shares: the logged-in visit, submitted forms, rendering and redirects.

A page handler takes a ``VisitDep`` (the API as the logged-in user) and, for a form, a ``FormDep``
(the form, once its CSRF token is checked); it reads and changes things only through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator
from urllib.parse import parse_qs

import jinja2
import structlog
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.types import ASGIApp

from ._api import Api
from ._session import CSRF_FIELD, PATH, TOKEN_COOKIE, csrf_for, csrf_ok

__all__ = ["CsrfRefused", "Form", "FormDep", "LoginNeeded", "Visit", "VisitDep", "api_of", "log", "render",
           "task_page", "to"]

log = structlog.get_logger("frontend.console")

_templates = jinja2.Environment(loader=jinja2.PackageLoader("frontend.console", "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined)


class LoginNeeded(Exception):
    """No token, or one the API no longer takes: the login page, with the cookie gone."""


class CsrfRefused(Exception):
    pass


@dataclass(frozen=True)
class Visit:
    """One request of a logged-in user: the API as that user, and who they are."""

    api: Api
    token: str
    user: dict[str, Any]

    @property
    def can_change(self) -> bool:
        return str(self.user["role"]) != "reader"

    @property
    def is_admin(self) -> bool:
        """Whether to offer the operator's pages; the API decides what the user may really see."""
        return str(self.user["role"]) == "admin"

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)


class Form:
    """A submitted urlencoded form; a blank field counts as not given."""

    def __init__(self, body: bytes) -> None:
        self._fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def one(self, name: str) -> str | None:
        values = self._fields.get(name) or [""]
        return values[0].strip() or None

    def raw(self, name: str) -> str:
        """The field as typed, blanks and all (a password)."""
        return (self._fields.get(name) or [""])[0]

    def all(self, name: str) -> list[str]:
        return [v for v in self._fields.get(name, []) if v.strip()]

    def given(self, *names: str) -> dict[str, str]:
        """The fields among ``names`` that were filled in, as the API's body fields of the same names."""
        return {name: value for name in names if (value := self.one(name)) is not None}


def render(template: str, visit: Visit | None, status: int = 200, csrf: str = "", **context: Any) -> HTMLResponse:
    """The page; ``csrf`` is its forms' token where there is no session (the login form)."""
    html = _templates.get_template(template).render(
        user=visit.user if visit else None, can_change=visit.can_change if visit else False,
        is_admin=visit.is_admin if visit else False, csrf=visit.csrf if visit else csrf, csrf_field=CSRF_FIELD,
        root=PATH, **context)
    return HTMLResponse(html, status_code=status)


def to(path: str) -> RedirectResponse:
    # 303: the browser follows a form's POST with a GET, so reloading the page does not repeat the action.
    return RedirectResponse(PATH + path, status_code=303)


def task_page(accepted: dict[str, Any]) -> RedirectResponse:
    """The page that follows the task an accepted call started."""
    return to(f"/tasks/{accepted['task']['id']}")


def api_of(request: Request, token: str | None) -> Api:
    client = (request.client.host, request.client.port) if request.client else None
    api_app: ASGIApp = request.app.state.api
    return Api(api_app, client, token)


async def _visit(request: Request) -> AsyncIterator[Visit]:
    token = request.cookies.get(TOKEN_COOKIE)
    # A token is URL-safe base64; anything else in the cookie could not even be sent as a header.
    if not token or not token.isascii() or not token.isprintable():
        raise LoginNeeded()
    async with api_of(request, token) as api:
        user = await api.get("/v1/whoami")
        yield Visit(api, token, user)


VisitDep = Annotated[Visit, Depends(_visit)]


async def _form(request: Request, visit: VisitDep) -> Form:
    """The submitted form, if its CSRF token is this session's."""
    form = Form(await request.body())
    if not csrf_ok(visit.csrf, form.one(CSRF_FIELD)):
        log.warning("console_csrf_refused", path=request.url.path, user=visit.user["user_name"])
        raise CsrfRefused()
    return form


FormDep = Annotated[Form, Depends(_form)]
