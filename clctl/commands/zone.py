"""``zone``: availability zones."""

from __future__ import annotations

import click

from ..output import Column, when
from ..resource import Resource
from ..session import api, json_option

__all__ = ["group"]

ZONE = Resource("zone", "zones", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"), Column("CREATED", "created_at", when),
))


@click.group("zone")
def group() -> None:
    """Availability zones: hypervisors declare theirs; admins may create them ahead."""


@group.command()
@click.argument("name")
@json_option
@click.pass_context
def create(ctx: click.Context, name: str) -> None:
    """Create a zone (admin)."""
    client = api(ctx)
    ZONE.finish(ctx, client, client.post(ZONE.path(), {"name": name}))


ZONE.add_list(group)
ZONE.add_delete(group)
