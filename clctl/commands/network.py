"""``network``: tenant networks (VPCs), and the external ones floating IPs come from."""

from __future__ import annotations

import click

from ..output import Column, when
from ..resource import ALL_ORGS, Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

NETWORK = Resource("network", "networks", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"), Column("EXTERNAL", "external"),
    Column("CREATED", "created_at", when),
))


@click.group("network")
def group() -> None:
    """Networks: each holds subnets, ports and at most one router."""


@group.command()
@click.argument("name")
@click.option("--external", is_flag=True, help="A provider network holding floating IPs (admin).")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, external: bool, wait: bool) -> None:
    """Create a network."""
    client = api(ctx)
    NETWORK.finish(ctx, client, client.post(NETWORK.path(), {"name": name, "external": external}), wait)


NETWORK.add_common(group, ALL_ORGS, asynchronous=True)
