"""``volume``: block storage, attached to one instance at a time."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, either, when
from ..resource import Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

VOLUME = Resource("volume", "volumes", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"), Column("SIZE_GB", "size_gb", right=True),
    Column("INSTANCE", either("instance", "instance_id")), Column("CREATED", "created_at", when),
))


@click.group("volume")
def group() -> None:
    """Volumes: block devices that outlive instances."""


@group.command()
@click.argument("name")
@click.option("--size-gb", type=click.IntRange(min=1), required=True)
@click.option("--instance", help="Attach it to this instance once it exists (it is made on that host).")
@click.option("--zone", help="Availability zone to make it in.")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, size_gb: int, instance: str | None, zone: str | None, wait: bool) -> None:
    """Create a volume."""
    body: dict[str, Any] = {"name": name, "size_gb": size_gb}
    body.update({k: v for k, v in {"instance": instance, "zone": zone}.items() if v})
    client = api(ctx)
    VOLUME.finish(ctx, client, client.post(VOLUME.path(), body), wait)


@group.command()
@VOLUME.argument()
@click.argument("instance")
@wait_option
@json_option
@click.pass_context
def attach(ctx: click.Context, ref: str, instance: str, wait: bool) -> None:
    """Attach a volume to an instance."""
    client = api(ctx)
    VOLUME.finish(ctx, client, client.post(VOLUME.path(ref, "attach"), {"instance": instance}), wait)


@group.command()
@VOLUME.argument()
@wait_option
@json_option
@click.pass_context
def detach(ctx: click.Context, ref: str, wait: bool) -> None:
    """Detach a volume from its instance."""
    client = api(ctx)
    VOLUME.finish(ctx, client, client.post(VOLUME.path(ref, "detach")), wait)


VOLUME.add_common(group, asynchronous=True)
