"""``sg``: security groups and their rules."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, either, print_table
from ..params import PORT_RANGE, PROTOCOL
from ..resource import Resource
from ..session import api, json_mode, json_option, wait_option
from ..tasks import finish

__all__ = ["group"]


def _ports(rule: dict[str, Any]) -> str:
    if rule.get("icmp_type") is not None:
        code = rule.get("icmp_code")
        return f"{rule['icmp_type']}" + (f"/{code}" if code is not None else "")  # type/code
    low, high = rule.get("port_min"), rule.get("port_max")
    if low is None:
        return "any"
    return str(low) if high in (None, low) else f"{low}-{high}"


RULE_COLUMNS = (
    Column("RULE", "id"), Column("DIRECTION", "direction"), Column("PROTOCOL", "protocol"), Column("PORTS/TYPE", _ports),
    Column("REMOTE", either("remote_cidr", "remote_group", "remote_group_id")),
)


SG = Resource("security group", "security-groups", (
    Column("ID", "id"), Column("NAME", "name"), Column("DESCRIPTION", "description"),
    Column("RULES", lambda g: len(g["rules"]) if isinstance(g.get("rules"), list) else None, right=True),
), details=("rules", RULE_COLUMNS))


@click.group("sg")
def group() -> None:
    """Security groups: stateful firewall rules for the ports in them."""


@group.command()
@click.argument("name")
@click.option("--description", default="")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, description: str, wait: bool) -> None:
    """Create a security group."""
    client = api(ctx)
    SG.finish(ctx, client, client.post(SG.path(), {"name": name, "description": description}), wait)


@group.command("rule-add")
@SG.argument("sg")
@click.option("--direction", type=click.Choice(["ingress", "egress"]), required=True)
@click.option("--protocol", type=PROTOCOL, required=True, metavar="tcp|udp|icmp|any|NUMBER")
@click.option("--port", type=click.IntRange(1, 65535), help="One port.")
@click.option("--ports", type=PORT_RANGE, metavar="LOW-HIGH", help="A range of ports, e.g. 1000-2000.")
@click.option("--icmp-type", type=click.IntRange(0, 255), help="ICMP only: one type (8: echo request).")
@click.option("--icmp-code", type=click.IntRange(0, 255), help="ICMP only, with --icmp-type: one code.")
@click.option("--remote-cidr", metavar="CIDR", help="Only from (ingress) or to (egress) these addresses.")
@click.option("--remote-group", metavar="SG", help="Only from or to the ports of this security group.")
@wait_option
@json_option
@click.pass_context
def rule_add(ctx: click.Context, sg: str, direction: str, protocol: str | int, port: int | None,
             ports: tuple[int, int] | None, icmp_type: int | None, icmp_code: int | None, remote_cidr: str | None,
             remote_group: str | None, wait: bool) -> None:
    """Add a rule: let traffic of this protocol and ports in or out."""
    if port is not None and ports is not None:
        raise click.UsageError("give --port or --ports, not both")
    if remote_cidr is not None and remote_group is not None:
        raise click.UsageError("give --remote-cidr or --remote-group, not both")
    body: dict[str, Any] = {"direction": direction, "protocol": protocol}
    if port is not None:
        body["port_min"] = body["port_max"] = port
    elif ports is not None:
        body["port_min"], body["port_max"] = ports
    if icmp_type is not None:
        body["icmp_type"] = icmp_type
    if icmp_code is not None:
        body["icmp_code"] = icmp_code
    if remote_cidr is not None:
        body["remote_cidr"] = remote_cidr
    if remote_group is not None:
        body["remote_group"] = remote_group
    client = api(ctx)
    answer = client.post(SG.path(sg, "rules"), body)
    finish(ctx, client, answer, wait=wait, show=lambda rule: print_table(RULE_COLUMNS, [rule]), collection=None)


@group.command("rule-delete")
@SG.argument("sg")
@click.argument("rule_id")
@wait_option
@json_option
@click.pass_context
def rule_delete(ctx: click.Context, sg: str, rule_id: str, wait: bool) -> None:
    """Delete a rule (its id is in 'clctl sg show')."""
    client = api(ctx)
    answer = client.delete(SG.path(sg, "rules", rule_id))
    if answer is None:
        if not json_mode(ctx):
            click.echo(f"deleted rule {rule_id} of security group {sg}")
        return
    finish(ctx, client, answer, wait=wait, show=SG.show, collection=None)


SG.add_common(group, asynchronous=True)
