"""Routers and floating IPs: how a tenant network reaches the outside, and the outside reaches an instance.

Every change of either answers with the ``network.sync`` task that carries it to the hosts, and
the console follows that task's page, as it does an instance's launch.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from ..api.schemas import Ref
from ._web import FormDep, Visit, VisitDep, render, task_page, to

__all__ = ["routing_pages"]


def routing_pages(console: FastAPI) -> None:
    _router_pages(console)
    _floating_ip_pages(console)


async def _networks(visit: Visit) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in (await visit.api.get("/v1/networks"))["items"]}


def _router_pages(console: FastAPI) -> None:
    @console.get("/routers")
    async def routers(visit: VisitDep) -> Response:
        rows = (await visit.api.get("/v1/routers"))["items"]
        networks = await _networks(visit)
        routed = {r["network_id"] for r in rows}
        # A network has one router at most, and an external network none.
        routable = [n for n in networks.values() if not n["external"] and n["id"] not in routed]
        return render("routers.html", visit, routers=rows, networks=networks, routable=routable)

    @console.post("/routers")
    async def create(visit: VisitDep, form: FormDep) -> Response:
        body = {"name": form.one("name") or "", "network": form.one("network") or "", "snat": form.one("snat") == "on"}
        return task_page(await visit.api.post("/v1/routers", body))

    @console.post("/routers/{router}/snat")
    async def snat(router: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.patch(f"/v1/routers/{router}", {"snat": form.one("snat") == "on"}))

    @console.post("/routers/{router}/delete")
    async def delete(router: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.delete(f"/v1/routers/{router}"))


def _floating_ip_pages(console: FastAPI) -> None:
    @console.get("/floating-ips")
    async def floating_ips(visit: VisitDep) -> Response:
        networks = await _networks(visit)
        return render("floating_ips.html", visit, fips=(await visit.api.get("/v1/floating-ips"))["items"],
                      networks=networks, external=[n for n in networks.values() if n["external"]],
                      ports=await _ports(visit, networks))

    @console.post("/floating-ips")
    async def allocate(visit: VisitDep, form: FormDep) -> Response:
        await visit.api.post("/v1/floating-ips", form.given("network"))
        return to("/floating-ips")

    @console.post("/floating-ips/{fip}/associate")
    async def associate(fip: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.patch(f"/v1/floating-ips/{fip}", {"port": form.one("port") or ""}))

    @console.post("/floating-ips/{fip}/disassociate")
    async def disassociate(fip: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.patch(f"/v1/floating-ips/{fip}", {"port": None}))

    @console.post("/floating-ips/{fip}/release")
    async def release(fip: Ref, visit: VisitDep, form: FormDep) -> Response:
        return task_page(await visit.api.delete(f"/v1/floating-ips/{fip}"))


async def _ports(visit: Visit, networks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Port id -> how the associate form names it: its instance, address and network."""
    instances = {i["id"]: i["name"] for i in (await visit.api.get("/v1/instances"))["items"]}
    ports = (await visit.api.get("/v1/ports"))["items"]
    return {p["id"]: f"{instances.get(p['instance_id'], p['name'])} {p['ip_address']} on "
                     f"{networks.get(p['network_id'], {}).get('name', p['network_id'])}" for p in ports}
