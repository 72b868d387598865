"""``subnet``: address ranges of a network."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, either
from ..params import ADDRESS_RANGE
from ..resource import Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]


def _ranges(pools: Any) -> str:
    """``[{"start": a, "end": b}, ...]`` as ``a-b, ...``; ``-`` for none."""
    if not isinstance(pools, list):
        return "-"
    return ", ".join(f"{p.get('start')}-{p.get('end')}" for p in pools if isinstance(p, dict)) or "-"


SUBNET = Resource("subnet", "subnets", (
    Column("ID", "id"), Column("NAME", "name"), Column("NETWORK", either("network", "network_id")),
    Column("CIDR", "cidr"), Column("GATEWAY", "gateway"), Column("DHCP", "dhcp"), Column("DNS", "dns_servers"),
    Column("VNI", "vni", right=True), Column("POOLS", "allocation_pools", fmt=_ranges),
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
@click.option("--pool", "pools", multiple=True, type=ADDRESS_RANGE, metavar="START-END",
              help="A range ports and floating IPs given no address take theirs from, both ends included "
                   "(repeatable).  [default: every address of the CIDR but the gateway]")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, network: str, cidr: str, gateway: str | None, no_dhcp: bool,
           dns_servers: tuple[str, ...], pools: tuple[dict[str, str], ...], wait: bool) -> None:
    """Create a subnet."""
    body: dict[str, Any] = {"name": name, "network": network, "cidr": cidr, "dhcp": not no_dhcp}
    if gateway is not None:
        body["gateway"] = gateway
    if dns_servers:
        body["dns_servers"] = list(dns_servers)
    if pools:
        body["allocation_pools"] = list(pools)
    client = api(ctx)
    SUBNET.finish(ctx, client, client.post(SUBNET.path(), body), wait)


SUBNET.add_common(group, click.option("--network", help="Only this network's subnets (id or name)."),
                  asynchronous=True)
