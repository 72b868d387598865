"""``port``: an address on a subnet, for an instance's interface or a floating IP."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, either
from ..resource import ALL_ORGS, Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

PORT = Resource("port", "ports", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"),
    Column("SUBNET", either("subnet", "subnet_id")), Column("IP", either("ip_address", "ip")),
    Column("MAC", "mac_address"), Column("INSTANCE", either("instance", "instance_id")),
))


@click.group("port")
def group() -> None:
    """Ports: addresses on subnets; made for instances, or ahead to keep an address."""


@group.command()
@click.option("--network", help="Network id or name: an address from any of its subnets.")
@click.option("--subnet", help="Subnet id or name.")
@click.option("--ip", metavar="IP", help="This address [default: the next free one].")
@click.option("--security-group", "security_groups", multiple=True, metavar="SG", help="Repeatable.")
@click.option("--name", default=None)
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, network: str | None, subnet: str | None, ip: str | None,
           security_groups: tuple[str, ...], name: str | None, wait: bool) -> None:
    """Create a port on a network or subnet."""
    if (network is None) == (subnet is None):
        raise click.UsageError("give exactly one of --network or --subnet")
    optional = {"name": name, "network": network, "subnet": subnet, "ip": ip, "security_groups": list(security_groups)}
    body: dict[str, Any] = {k: v for k, v in optional.items() if v}
    client = api(ctx)
    PORT.finish(ctx, client, client.post(PORT.path(), body), wait)


PORT.add_common(group, ALL_ORGS, asynchronous=True)
