"""``volume``: block storage, attached to one instance at a time; made on the host of the first."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, either, when
from ..resource import ALL_ORGS, Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

VOLUME = Resource("volume", "volumes", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"), Column("SIZE_GB", "size_gb", right=True),
    Column("INSTANCE", either("attachment.instance", "instance_id")), Column("DEVICE", "attachment.device"),
    Column("HYPERVISOR", "hypervisor"), Column("CREATED", "created_at", when),
))


@click.group("volume")
def group() -> None:
    """Volumes: block devices that outlive instances."""


@group.command()
@click.argument("name")
@click.option("--size-gb", type=click.IntRange(min=1), help="Its size; required unless --snapshot is given "
                                                             "(from a snapshot: at least its size, the default).")
@click.option("--instance", help="Attach it to this instance once made (it is made on that instance's hypervisor).")
@click.option("--snapshot", help="Make it a copy of this snapshot (on the snapshot's hypervisor).")
@click.option("--zone", help="Attach it only to instances in this availability zone.")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, size_gb: int | None, instance: str | None, snapshot: str | None,
           zone: str | None, wait: bool) -> None:
    """Create a volume.

    Without --instance or --snapshot it is on no hypervisor until it is first attached: it is
    made then, on the instance's hypervisor, and stays there.
    """
    if size_gb is None and snapshot is None:
        raise click.UsageError("--size-gb is required unless --snapshot is given")
    body: dict[str, Any] = {"name": name}
    body.update({k: v for k, v in {"size_gb": size_gb, "instance": instance, "snapshot": snapshot,
                                   "zone": zone}.items() if v})
    client = api(ctx)
    VOLUME.finish(ctx, client, client.post(VOLUME.path(), body), wait)


@group.command()
@VOLUME.argument()
@click.argument("instance")
@wait_option
@json_option
@click.pass_context
def attach(ctx: click.Context, ref: str, instance: str, wait: bool) -> None:
    """Attach a volume to an instance (on the volume's hypervisor, if it has one yet)."""
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


VOLUME.add_common(group, ALL_ORGS, asynchronous=True)
