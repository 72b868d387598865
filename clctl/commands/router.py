"""``router``: a network's distributed router, with SNAT to the outside."""

from __future__ import annotations

import click

from ..output import Column, either
from ..resource import Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

ROUTER = Resource("router", "routers", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"),
    Column("NETWORK", either("network", "network_id")), Column("SNAT", "snat"),
))


@click.group("router")
def group() -> None:
    """Routers: one per network, present on every hypervisor that hosts the network."""


@group.command()
@click.argument("name")
@click.option("--network", required=True, help="Network id or name.")
@click.option("--no-snat", is_flag=True, help="No SNAT egress to the outside world.")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, network: str, no_snat: bool, wait: bool) -> None:
    """Create a network's router."""
    client = api(ctx)
    ROUTER.finish(ctx, client, client.post(ROUTER.path(), {"name": name, "network": network, "snat": not no_snat}),
                  wait)


ROUTER.add_common(group, asynchronous=True)
