"""``fip``: floating IPs, public addresses that follow a port."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, either
from ..resource import ALL_ORGS, Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

FIP = Resource("floating IP", "floating-ips", (
    Column("ID", "id"), Column("ADDRESS", "address"), Column("STATUS", "status"),
    Column("NETWORK", either("network", "network_id")), Column("PORT", either("port", "port_id")),
), ident="address")


@click.group("fip")
def group() -> None:
    """Floating IPs: addresses of an external network, mapped to a port by 1:1 NAT."""


@group.command()
@click.option("--network", metavar="EXTERNAL_NETWORK", help="The pool to take it from [default: the API's choice].")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, network: str | None, wait: bool) -> None:
    """Allocate a floating IP."""
    body: dict[str, Any] = {} if network is None else {"network": network}
    client = api(ctx)
    FIP.finish(ctx, client, client.post(FIP.path(), body), wait)


@group.command()
@FIP.argument()
@click.argument("port")
@wait_option
@json_option
@click.pass_context
def associate(ctx: click.Context, ref: str, port: str, wait: bool) -> None:
    """Map a floating IP to a port (by id or name)."""
    client = api(ctx)
    FIP.finish(ctx, client, client.patch(FIP.path(ref), {"port": port}), wait)


@group.command()
@FIP.argument()
@wait_option
@json_option
@click.pass_context
def disassociate(ctx: click.Context, ref: str, wait: bool) -> None:
    """Unmap a floating IP from its port; it stays allocated."""
    client = api(ctx)
    FIP.finish(ctx, client, client.patch(FIP.path(ref), {"port": None}), wait)


FIP.add_common(group, ALL_ORGS, asynchronous=True)
