"""``server-group``: groups of instances the scheduler keeps apart."""

from __future__ import annotations

import click

from ..output import Column, when
from ..resource import Resource
from ..session import api, json_option

__all__ = ["group"]

SERVER_GROUP = Resource("server group", "server-groups", (
    Column("ID", "id"), Column("NAME", "name"), Column("POLICY", "policy"),
    Column("MEMBERS", lambda g: len(g["members"]) if isinstance(g.get("members"), list) else None, right=True),
    Column("CREATED", "created_at", when),
))


@click.group("server-group")
def group() -> None:
    """Server groups: instances in an anti-affinity group never share a hypervisor."""


@group.command()
@click.argument("name")
@click.option("--policy", default="anti-affinity", show_default=True)
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, policy: str) -> None:
    """Create a server group; name it in 'instance create --server-group'."""
    client = api(ctx)
    SERVER_GROUP.finish(ctx, client, client.post(SERVER_GROUP.path(), {"name": name, "policy": policy}))


SERVER_GROUP.add_common(group)
