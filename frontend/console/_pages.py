"""The console's pages: server-rendered HTML over the REST API, one handler per page or form.

Every handler reads and changes things only through ``_api.Api``, that is through ``/v1`` as
the logged-in user: what a page shows and what a form may do is what the API lets that user
see and do, and a refusal is shown with the API's own field and reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from ..api.schemas import Ref
from ._api import Refusal
from ._images import image_pages
from ._liveconsole import live_console_pages
from ._operator import operator_pages
from ._routing import routing_pages
from ._session import CSRF_FIELD, LOGIN_COOKIE, TOKEN_COOKIE, clear, csrf_ok, new_login_csrf, set_cookie
from ._web import CsrfRefused, Form, FormDep, LoginNeeded, VisitDep, api_of, log, render, task_page, to

__all__ = ["PAGE_SIZE", "create_console"]

#: instances per page of the list: what a page renders stays small whatever the organization holds
PAGE_SIZE = 50
#: only the console's own files, no inline script or style, and no framing (clickjacking)
_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'")
_FINISHED = ("succeeded", "failed")


def _error_page(status: int, code: str, reason: str, field: str | None) -> HTMLResponse:
    return render("error.html", None, status, code=code, reason=reason, field=field)


def _install_handlers(console: FastAPI) -> None:
    @console.exception_handler(LoginNeeded)
    async def login_needed(request: Request, exc: LoginNeeded) -> Response:
        response = to("/login")
        clear(request, response, TOKEN_COOKIE)
        return response

    @console.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return _error_page(403, "forbidden", "the form's CSRF token is missing or wrong: reload the page and send "
                                             "it again", CSRF_FIELD)

    @console.exception_handler(Refusal)
    async def refused(request: Request, exc: Refusal) -> Response:
        if exc.status == 401:  # revoked or expired meanwhile
            return await login_needed(request, LoginNeeded())
        return _error_page(exc.status, exc.code, exc.reason, exc.field)

    @console.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path")) or None
        return _error_page(422, "invalid", str(first.get("msg", "invalid")).removeprefix("Value error, "), field)

    @console.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = f"no page {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error_page(exc.status_code, {404: "not_found"}.get(exc.status_code, "http_error"), reason, None)

    @console.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        # no-store: after logout, the back button must ask again (and be sent to the login page),
        # not show a page of the session from the browser's cache.
        response.headers["Cache-Control"] = "no-store"
        # A page that runs the console's script says so with its own policy.
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def create_console(api: ASGIApp) -> FastAPI:
    """The console, to mount at ``PATH`` on the API's app ``api``, which its pages call."""
    console = FastAPI(title="cloudland console", docs_url=None, redoc_url=None, openapi_url=None)
    console.state.api = api
    _install_handlers(console)
    console.mount("/static", StaticFiles(packages=[("frontend.console", "static")]), name="static")
    _login_pages(console)
    _instance_pages(console)
    _keypair_pages(console)
    _network_pages(console)
    _security_group_pages(console)
    _volume_pages(console)
    image_pages(console)
    live_console_pages(console)
    routing_pages(console)
    operator_pages(console)
    return console


def _login_pages(console: FastAPI) -> None:
    @console.get("/")
    async def home() -> Response:
        return to("/instances")

    @console.get("/login")
    async def login_form(request: Request) -> Response:
        return _login_page(request, None, 200)

    @console.post("/login")
    async def login(request: Request) -> Response:
        form = Form(await request.body())
        if not csrf_ok(request.cookies.get(LOGIN_COOKIE), form.one(CSRF_FIELD)):
            log.warning("console_csrf_refused", path=request.url.path, user=None)
            raise CsrfRefused()
        async with api_of(request, None) as api:
            try:
                token = await api.post("/v1/tokens", {"username": form.one("username") or "",
                                                      "password": form.raw("password")})
            except Refusal as refusal:
                # Not the name tried: it may be a password typed into the wrong field.
                log.info("console_login_refused", code=refusal.code)
                return _login_page(request, refusal, refusal.status)
        log.info("console_login", user=form.one("username"), role=token["role"])
        expires = dt.datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00"))
        response = to("/instances")
        set_cookie(request, response, TOKEN_COOKIE, token["token"],
                   max(0, int((expires - dt.datetime.now(dt.timezone.utc)).total_seconds())))
        clear(request, response, LOGIN_COOKIE)
        return response

    @console.post("/logout")
    async def logout(request: Request, visit: VisitDep, form: FormDep) -> Response:
        await visit.api.delete("/v1/tokens/current")
        log.info("console_logout", user=visit.user["user_name"])
        response = to("/login")
        clear(request, response, TOKEN_COOKIE)
        return response


def _login_page(request: Request, refusal: Refusal | None, status: int) -> Response:
    csrf = new_login_csrf()
    page = render("login.html", None, status, csrf=csrf, refusal=refusal)
    set_cookie(request, page, LOGIN_COOKIE, csrf, None)
    return page


def _instance_pages(console: FastAPI) -> None:
    @console.get("/instances")
    async def instances(visit: VisitDep, page: int = Query(default=1, ge=1, le=1_000_000)) -> Response:
        # One more than a page: whether there is a next page, without counting them all.
        rows = (await visit.api.get("/v1/instances", limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE))["items"]
        flavors = {f["id"]: f["name"] for f in (await visit.api.get("/v1/flavors"))["items"]}
        return render("instances.html", visit, instances=rows[:PAGE_SIZE], flavors=flavors, page=page,
                       more=len(rows) > PAGE_SIZE)

    @console.get("/instances/new")
    async def launch_form(visit: VisitDep) -> Response:
        api = visit.api
        return render("launch.html", visit, images=(await api.get("/v1/images"))["items"],
                       flavors=(await api.get("/v1/flavors"))["items"],
                       networks=[n for n in (await api.get("/v1/networks"))["items"] if not n["external"]],
                       keypairs=(await api.get("/v1/keypairs"))["items"],
                       groups=(await api.get("/v1/security-groups"))["items"])

    @console.post("/instances")
    async def launch(visit: VisitDep, form: FormDep) -> Response:
        body: dict[str, Any] = {"name": form.one("name") or "", **form.given("flavor", "image", "keypair")}
        if (user_data := form.one("user_data")) is not None:
            body["user_data"] = user_data
        if (network := form.one("network")) is not None:
            body["nics"] = [{"network": network}]
        if groups := form.all("security_groups"):
            body["security_groups"] = groups
        accepted = await visit.api.post("/v1/instances", body)
        return task_page(accepted)

    @console.get("/instances/{instance}")
    async def instance(instance: Ref, visit: VisitDep) -> Response:
        row = await visit.api.get(f"/v1/instances/{instance}")
        tasks = (await visit.api.get("/v1/tasks", resource=row["id"], limit=10))["items"]
        flavors = (await visit.api.get("/v1/flavors"))["items"] if visit.can_change else []
        return render("instance.html", visit, instance=row, tasks=tasks, flavors=flavors)

    # Before the plain actions, whose path /instances/{instance}/{action} would take these too.
    @console.post("/instances/{instance}/resize")
    async def resize(instance: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.post(f"/v1/instances/{instance}/resize", {"flavor": form.one("flavor") or ""}))

    @console.post("/instances/{instance}/image")
    async def image(instance: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.post(f"/v1/instances/{instance}/image", {"name": form.one("name") or ""}))

    @console.post("/instances/{instance}/{action}")
    async def act(instance: Ref, action: Literal["start", "stop", "reboot", "delete"], visit: VisitDep,
                  form: FormDep) -> Response:
        if action == "delete":
            accepted = await visit.api.delete(f"/v1/instances/{instance}")
        else:
            accepted = await visit.api.post(f"/v1/instances/{instance}/{action}")
        return task_page(accepted)

    @console.get("/instances/{instance}/console")
    async def console_log(instance: Ref, visit: VisitDep) -> Response:
        row = await visit.api.get(f"/v1/instances/{instance}")
        return render("console.html", visit, instance=row,
                       console=await visit.api.get(f"/v1/instances/{instance}/console"))

    @console.get("/tasks/{task}")
    async def task(task: Ref, visit: VisitDep) -> Response:
        row = await visit.api.get(f"/v1/tasks/{task}")
        return render("task.html", visit, task=row, finished=row["status"] in _FINISHED)


def _keypair_pages(console: FastAPI) -> None:
    @console.get("/keypairs")
    async def keypairs(visit: VisitDep) -> Response:
        return render("keypairs.html", visit, keypairs=(await visit.api.get("/v1/keypairs"))["items"])

    @console.post("/keypairs/new")
    async def create(visit: VisitDep, form: FormDep) -> Response:
        # Made here and shown once: the cloud keeps only the public half, as with an imported key.
        name = form.one("name") or ""
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        keypair = await visit.api.post("/v1/keypairs", {"name": name, "public_key": f"{public} {name}"})
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()).decode()
        return render("keypair_created.html", visit, 201, keypair=keypair, private_key=private)

    @console.post("/keypairs/import")
    async def import_key(visit: VisitDep, form: FormDep) -> Response:
        await visit.api.post("/v1/keypairs", {"name": form.one("name") or "", "public_key": form.one("public_key") or ""})
        return to("/keypairs")

    @console.post("/keypairs/{keypair}/delete")
    async def delete(keypair: Ref, visit: VisitDep, form: FormDep) -> Response:
        await visit.api.delete(f"/v1/keypairs/{keypair}")
        return to("/keypairs")


def _network_pages(console: FastAPI) -> None:
    @console.get("/networks")
    async def networks(visit: VisitDep) -> Response:
        subnets: dict[str, list[dict[str, Any]]] = {}
        for subnet in (await visit.api.get("/v1/subnets"))["items"]:
            subnets.setdefault(subnet["network_id"], []).append(subnet)
        return render("networks.html", visit, networks=(await visit.api.get("/v1/networks"))["items"],
                       subnets=subnets)

    @console.post("/networks")
    async def create(visit: VisitDep, form: FormDep) -> Response:
        await visit.api.post("/v1/networks", {"name": form.one("name") or ""})
        return to("/networks")

    @console.post("/networks/{network}/delete")
    async def delete(network: Ref, visit: VisitDep, form: FormDep) -> Response:
        await visit.api.delete(f"/v1/networks/{network}")
        return to("/networks")

    @console.post("/subnets")
    async def create_subnet(visit: VisitDep, form: FormDep) -> Response:
        await visit.api.post("/v1/subnets", {"name": form.one("name") or "", **form.given("network", "cidr")})
        return to("/networks")

    @console.post("/subnets/{subnet}/delete")
    async def delete_subnet(subnet: Ref, visit: VisitDep, form: FormDep) -> Response:
        await visit.api.delete(f"/v1/subnets/{subnet}")
        return to("/networks")


def _security_group_pages(console: FastAPI) -> None:
    @console.get("/security-groups")
    async def groups(visit: VisitDep) -> Response:
        return render("security_groups.html", visit, groups=(await visit.api.get("/v1/security-groups"))["items"])

    @console.post("/security-groups")
    async def create(visit: VisitDep, form: FormDep) -> Response:
        group = await visit.api.post("/v1/security-groups", {"name": form.one("name") or "",
                                                             **form.given("description")})
        return to(f"/security-groups/{group['id']}")

    @console.get("/security-groups/{group}")
    async def group(group: Ref, visit: VisitDep) -> Response:
        return render("security_group.html", visit, group=await visit.api.get(f"/v1/security-groups/{group}"))

    @console.post("/security-groups/{group}/delete")
    async def delete(group: Ref, visit: VisitDep, form: FormDep) -> Response:
        await visit.api.delete(f"/v1/security-groups/{group}")
        return to("/security-groups")

    @console.post("/security-groups/{group}/rules")
    async def add_rule(group: Ref, visit: VisitDep, form: FormDep) -> Response:
        # Numbers go as typed: the API's own validation names a field that is not one.
        body = form.given("direction", "protocol", "port_min", "port_max", "remote_cidr", "remote_group")
        await visit.api.post(f"/v1/security-groups/{group}/rules", body)
        return to(f"/security-groups/{group}")

    @console.post("/security-groups/{group}/rules/{rule}/delete")
    async def delete_rule(group: Ref, rule: Ref, visit: VisitDep, form: FormDep) -> Response:
        await visit.api.delete(f"/v1/security-groups/{group}/rules/{rule}")
        return to(f"/security-groups/{group}")


def _volume_pages(console: FastAPI) -> None:
    @console.get("/volumes")
    async def volumes(visit: VisitDep) -> Response:
        volumes = (await visit.api.get("/v1/volumes"))["items"]
        return render("volumes.html", visit, volumes=volumes, volume_names={v["id"]: v["name"] for v in volumes},
                      snapshots=(await visit.api.get("/v1/snapshots"))["items"],
                      instances=(await visit.api.get("/v1/instances"))["items"] if visit.can_change else [])

    @console.post("/volumes")
    async def create(visit: VisitDep, form: FormDep) -> Response:
        accepted = await visit.api.post("/v1/volumes", {"name": form.one("name") or "", **form.given("size_gb")})
        return task_page(accepted)

    @console.post("/volumes/{volume}/attach")
    async def attach(volume: Ref, visit: VisitDep, form: FormDep) -> Response:
        accepted = await visit.api.post(f"/v1/volumes/{volume}/attach", {"instance": form.one("instance") or ""})
        return task_page(accepted)

    @console.post("/volumes/{volume}/detach")
    async def detach(volume: Ref, visit: VisitDep, form: FormDep) -> Response:
        accepted = await visit.api.post(f"/v1/volumes/{volume}/detach")
        return task_page(accepted)

    @console.post("/volumes/{volume}/delete")
    async def delete(volume: Ref, visit: VisitDep, form: FormDep) -> Response:
        accepted = await visit.api.delete(f"/v1/volumes/{volume}")
        return task_page(accepted)

    @console.post("/volumes/{volume}/snapshot")
    async def snapshot(volume: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.post("/v1/snapshots", {"name": form.one("name") or "", "volume": volume}))

    @console.post("/snapshots/{snapshot}/volume")
    async def restore(snapshot: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.post("/v1/volumes", {"name": form.one("name") or "", "snapshot": snapshot}))

    @console.post("/snapshots/{snapshot}/delete")
    async def delete_snapshot(snapshot: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.delete(f"/v1/snapshots/{snapshot}"))
