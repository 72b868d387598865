"""``snapshot``: point-in-time copies of volumes, kept on the volume's hypervisor."""

from __future__ import annotations

import click

from ..output import Column, when
from ..resource import Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

SNAPSHOT = Resource("snapshot", "snapshots", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"), Column("SIZE_GB", "size_gb", right=True),
    Column("VOLUME", "volume_id"), Column("CONSISTENCY", "consistency"), Column("HYPERVISOR", "hypervisor"),
    Column("CREATED", "created_at", when),
))


@click.group("snapshot")
def group() -> None:
    """Volume snapshots; 'volume create --snapshot' makes a volume from one."""


@group.command()
@click.argument("name")
@click.option("--volume", required=True, help="The volume to copy.")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, volume: str, wait: bool) -> None:
    """Take a snapshot of a volume.

    A volume a running instance uses is copied live: with the guest's file systems frozen where
    a guest agent answers (consistency 'frozen'), else crash-consistent.
    """
    client = api(ctx)
    SNAPSHOT.finish(ctx, client, client.post(SNAPSHOT.path(), {"name": name, "volume": volume}), wait)


SNAPSHOT.add_common(group, click.option("--volume", help="Only the snapshots of this volume."), asynchronous=True)
