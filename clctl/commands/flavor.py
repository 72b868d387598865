"""``flavor``: the sizes instances come in."""

from __future__ import annotations

import click

from ..output import Column
from ..resource import Resource
from ..session import api, json_option

__all__ = ["group"]

FLAVOR = Resource("flavor", "flavors", (
    Column("ID", "id"), Column("NAME", "name"), Column("VCPUS", "vcpus", right=True),
    Column("MEMORY_MB", "memory_mb", right=True), Column("DISK_GB", "disk_gb", right=True),
    Column("PUBLIC", "public"),
))


@click.group("flavor")
def group() -> None:
    """Flavors: admins define them; every organization sees the public ones."""


@group.command()
@click.argument("name")
@click.option("--vcpus", type=click.IntRange(min=1), required=True)
@click.option("--memory-mb", type=click.IntRange(min=1), required=True)
@click.option("--disk-gb", type=click.IntRange(min=1), required=True)
@click.option("--public/--private", default=True, show_default=True,
              help="Every organization may use it, or only the admins' organization.")
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, vcpus: int, memory_mb: int, disk_gb: int, public: bool) -> None:
    """Create a flavor (admin)."""
    client = api(ctx)
    body = {"name": name, "vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb, "public": public}
    FLAVOR.finish(ctx, client, client.post(FLAVOR.path(), body))


FLAVOR.add_common(group)
