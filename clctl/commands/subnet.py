"""``subnet``: address ranges of a network."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, either
from ..resource import Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

SUBNET = Resource("subnet", "subnets", (
    Column("ID", "id"), Column("NAME", "name"), Column("NETWORK", either("network", "network_id")),
    Column("CIDR", "cidr"), Column("GATEWAY", "gateway"), Column("DHCP", "dhcp"), Column("DNS", "dns_servers"),
    Column("VNI", "vni", right=True),
))


@click.group("subnet")
def group() -> None:
    """Subnets: a CIDR of a network, with its gateway, DHCP and DNS servers."""


@group.command()
@click.argument("name")
@click.option("--network", required=True, help="Network id or name.")
@click.option("--cidr", required=True, help="e.g. 10.0.0.0/24")
@click.option("--gateway", metavar="IP", help="[default: the first address of the CIDR]")
@click.option("--no-dhcp", is_flag=True, help="Hand out no addresses by DHCP.")
@click.option("--dns", "dns_servers", multiple=True, metavar="IP", help="A DNS server for DHCP to offer (repeatable).")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, network: str, cidr: str, gateway: str | None, no_dhcp: bool,
           dns_servers: tuple[str, ...], wait: bool) -> None:
    """Create a subnet."""
    body: dict[str, Any] = {"name": name, "network": network, "cidr": cidr, "dhcp": not no_dhcp}
    if gateway is not None:
        body["gateway"] = gateway
    if dns_servers:
        body["dns_servers"] = list(dns_servers)
    client = api(ctx)
    SUBNET.finish(ctx, client, client.post(SUBNET.path(), body), wait)


SUBNET.add_common(group, click.option("--network", help="Only this network's subnets (id or name)."),
                  asynchronous=True)
