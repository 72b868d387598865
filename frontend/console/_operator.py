"""The operator's pages: the tree, hypervisors, organizations and their users, enrolment tokens,
events and the audit log.

Which of them a user may see is the API's to say, as everywhere in the console: the tree,
hypervisors, enrolments and the audit log answer 403 to anyone but an admin, and that refusal is
the page a tenant gets.  Organizations and events are shown to tenants too, as the API scopes
them: their own organization (its quotas and use) and their own organization's events.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from pydantic import TypeAdapter, ValidationError

from ..api.schemas import Name, Ref
from ._api import Refusal
from ._treeview import branches, troubled
from ._web import FormDep, Visit, VisitDep, log, render, to

__all__ = ["operator_pages"]

_NAME: TypeAdapter[str] = TypeAdapter(Name)
#: hypervisors per page: a page of a 10,000-host cloud stays quick to render and to read
HOSTS_PAGE = 100
#: a node that reparented within this many seconds is marked on the tree
RECENT_REPARENT_S = 3600
#: the time windows the filters of events and the audit log offer, in seconds
WINDOWS = {"600": "the last 10 minutes", "3600": "the last hour", "86400": "the last day",
           "604800": "the last week"}
#: how many rows the filters of events and the audit log offer to show
LIMITS = ("50", "100", "500", "1000")
#: seconds between reloads of the live events page
LIVE_REFRESH_S = 5
#: the troubled nodes listed above the tree (the branches count all of them)
TROUBLE_SHOWN = 200


def operator_pages(console: FastAPI) -> None:
    _tree_page(console)
    _hypervisor_pages(console)
    _user_forms(console)  # before the organization's actions, whose path /orgs/{org}/{action} would take /users
    _org_pages(console)
    _enrolment_pages(console)
    _log_pages(console)


def _since(seconds: str | None) -> str | None:
    """The start of a window offered by ``WINDOWS``, as the API takes a moment."""
    if seconds not in WINDOWS:
        return None
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(seconds))).isoformat()


def _filters(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The filters filled in, as typed: the API checks them and names the field it refuses."""
    return {name: value for name in names if (value := request.query_params.get(name, "").strip())}


def _tree_page(console: FastAPI) -> None:
    @console.get("/tree")
    async def tree(visit: VisitDep) -> Response:
        nodes = (await visit.api.get("/v1/tree"))["nodes"]
        moved = await _reparented(visit)
        return render("tree.html", visit, branches=branches(nodes, set(moved)), moved=moved,
                      troubled=troubled(nodes)[:TROUBLE_SHOWN], troubled_count=len(troubled(nodes)),
                      states=Counter(n["state"] for n in nodes if n["role"] == "backend"),
                      window_min=RECENT_REPARENT_S // 60)


async def _reparented(visit: Visit) -> dict[str, str]:
    """Node -> how it moved, for the nodes that reparented lately (the newest move of each)."""
    since = _since(str(RECENT_REPARENT_S))
    moved: dict[str, str] = {}
    for kind in ("host.reparented", "agent.reparented"):
        for event in (await visit.api.get("/v1/events", kind=kind, since=since, limit=1000))["items"]:
            moved.setdefault(event["host"], f"{event['message']} ({event['created_at']})")
    return moved


def _hypervisor_pages(console: FastAPI) -> None:
    @console.get("/hypervisors")
    async def hypervisors(visit: VisitDep, page: int = Query(default=1, ge=1, le=1_000_000),
                          state: Literal["up", "suspect", "down", "disabled"] | None = None) -> Response:
        hosts = (await visit.api.get("/v1/hypervisors"))["items"]
        states = Counter(_state(h) for h in hosts)
        shown = [h for h in hosts if state is None or state in (_state(h), "disabled" if not h["enabled"] else None)]
        first = (page - 1) * HOSTS_PAGE
        return render("hypervisors.html", visit, hosts=shown[first:first + HOSTS_PAGE], page=page,
                      more=len(shown) > first + HOSTS_PAGE, state=state, states=states, total=_capacity(hosts),
                      disabled=sum(not h["enabled"] for h in hosts))

    @console.post("/hypervisors/{host}/{action}")
    async def enable(host: Ref, action: Literal["enable", "disable"], visit: VisitDep, form: FormDep) -> Response:
        await visit.api.patch(f"/v1/hypervisors/{host}", {"enabled": action == "enable"})
        log.info("console_hypervisor_changed", host=host, enabled=action == "enable", user=visit.user["user_name"])
        return to("/hypervisors")


def _state(host: dict[str, Any]) -> str:
    """The tree's view of a host where it answered, else the last one written down."""
    return str(host["tree_state"] or host["status"])


def _capacity(hosts: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The cloud's capacity, used and total, in each measure."""
    return {measure: {"used": sum(h["used"][measure] for h in hosts), "total": sum(h["total"][measure] for h in hosts)}
            for measure in ("vcpus", "memory_mb", "disk_gb")}


def _org_pages(console: FastAPI) -> None:
    @console.get("/orgs")
    async def orgs(visit: VisitDep) -> Response:
        return render("orgs.html", visit, orgs=(await visit.api.get("/v1/orgs"))["items"])

    @console.post("/orgs")
    async def create(visit: VisitDep, form: FormDep) -> Response:
        org = await visit.api.post("/v1/orgs", {"name": form.one("name") or ""})
        return to(f"/orgs/{org['id']}")

    @console.get("/orgs/{org}")
    async def org(org: Ref, visit: VisitDep) -> Response:
        row = await visit.api.get(f"/v1/orgs/{org}")
        users = (await visit.api.get("/v1/users", org=row["id"]))["items"]
        return render("org.html", visit, org=row, users=users, manages_users=_manages_users(visit))

    @console.post("/orgs/{org}/quotas")
    async def set_quotas(org: Ref, visit: VisitDep, form: FormDep) -> Response:
        # Every quota is sent: one left blank is unlimited (null), one typed is checked by the API.
        row = await visit.api.get(f"/v1/orgs/{org}")
        await visit.api.patch(f"/v1/orgs/{org}", {"quotas": {q: form.one(f"quota_{q}") for q in row["quotas"]}})
        return to(f"/orgs/{org}")

    @console.post("/orgs/{org}/{action}")
    async def change(org: Ref, action: Literal["enable", "disable", "delete"], visit: VisitDep,
                     form: FormDep) -> Response:
        if action == "delete":
            await visit.api.delete(f"/v1/orgs/{org}")
            return to("/orgs")
        await visit.api.patch(f"/v1/orgs/{org}", {"status": "active" if action == "enable" else "disabled"})
        return to(f"/orgs/{org}")


def _manages_users(visit: Visit) -> bool:
    """Whether to offer the forms that manage users; the API refuses them to anyone else anyway."""
    return str(visit.user["role"]) in ("tenant-admin", "admin")


def _user_forms(console: FastAPI) -> None:
    @console.post("/orgs/{org}/users")
    async def create(org: Ref, visit: VisitDep, form: FormDep) -> Response:
        await visit.api.post("/v1/users", {"name": form.one("name") or "", "password": form.raw("password"),
                                           "org": org, **form.given("role")})
        return to(f"/orgs/{org}")

    @console.post("/orgs/{org}/users/{user}/{action}")
    async def change(org: Ref, user: Ref, action: Literal["enable", "disable", "delete"], visit: VisitDep,
                     form: FormDep) -> Response:
        if action == "delete":
            await visit.api.delete(f"/v1/users/{user}")
        else:
            await visit.api.patch(f"/v1/users/{user}", {"status": "active" if action == "enable" else "disabled"})
        return to(f"/orgs/{org}")


def _enrolment_pages(console: FastAPI) -> None:
    @console.get("/enrolments")
    async def enrolments(visit: VisitDep, revoked: Ref | None = None) -> Response:
        return render("enrolments.html", visit, revoked=revoked,
                      enrolments=(await visit.api.get("/v1/hypervisors/enrolments"))["items"])

    @console.post("/enrolments")
    async def issue(visit: VisitDep, form: FormDep) -> Response:
        body: dict[str, Any] = {"name": form.one("name") or "", **form.given("role", "ttl_s")}
        issued = await visit.api.post("/v1/hypervisors/enrolments", body)
        log.info("console_enrolment_issued", node=issued["name"], role=issued["role"], user=visit.user["user_name"])
        return render("enrolment_issued.html", visit, 201, issued=issued)

    @console.post("/enrolments/revoke")
    async def revoke(visit: VisitDep, form: FormDep) -> Response:
        node = await visit.api.post(f"/v1/hypervisors/{_node_name(form.one('name'))}/revoke")
        log.info("console_node_revoked", node=node["name"], user=visit.user["user_name"])
        return to(f"/enrolments?revoked={node['name']}")


def _node_name(typed: str | None) -> str:
    """A node's name as the API would take it, checked before it becomes a part of the path."""
    try:
        return str(_NAME.validate_python(typed or ""))
    except ValidationError as exc:
        raise Refusal(422, "invalid", str(exc.errors()[0]["msg"]).removeprefix("Value error, "), "name") from None


def _log_pages(console: FastAPI) -> None:
    @console.get("/events")
    async def events(request: Request, visit: VisitDep) -> Response:
        filters = _filters(request, ("kind", "host", "within", "limit", "live"))
        live = filters.pop("live", None) is not None
        return await _log_page(visit, "events.html", "/v1/events", filters, live=live,
                               refresh_s=LIVE_REFRESH_S if live else None)

    @console.get("/audit")
    async def audit(request: Request, visit: VisitDep) -> Response:
        filters = _filters(request, ("user", "method", "status", "path_prefix", "within", "limit"))
        return await _log_page(visit, "audit.html", "/v1/audit", filters)


async def _log_page(visit: Visit, template: str, path: str, filters: dict[str, str], **context: Any) -> Response:
    """Events or the audit log, newest first, as filtered; a filter the API refuses is shown beside the form."""
    params = {name: value for name, value in filters.items() if name != "within"}
    if (since := _since(filters.get("within"))) is not None:
        params["since"] = since
    try:
        rows, refusal = (await visit.api.get(path, **params))["items"], None
    except Refusal as refused:
        if refused.status != 422:
            raise
        rows, refusal = [], refused
    return render(template, visit, 422 if refusal else 200, rows=rows, refusal=refusal, filters=filters,
                  windows=WINDOWS, limits=LIMITS, **context)
