"""``org``: organizations (tenants) and their quotas."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, pick, text, when
from ..params import QUOTA
from ..resource import Resource
from ..session import api, json_option

__all__ = ["group"]


def _usage(name: str) -> Column:
    """``used/quota``, or just ``used`` when unlimited; sorted by the amount used."""

    def used(org: dict[str, Any]) -> Any:
        return pick(org, f"usage.{name}")

    def cell(org: dict[str, Any]) -> str:
        quota = pick(org, f"quotas.{name}")
        return text(used(org)) + ("" if quota is None else f"/{quota}")

    return Column(name.upper(), cell, fmt=str, right=True, sort=used)


ORG = Resource("organization", "orgs", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"),
    _usage("instances"), _usage("vcpus"), _usage("memory_mb"), _usage("volume_gb"),
    Column("CREATED", "created_at", when),
))

quota_option = click.option(
    "--quota", "quotas", type=QUOTA, multiple=True, metavar="NAME=N",
    help="A quota, e.g. instances=10 or vcpus=unlimited (repeatable): instances, vcpus, memory_mb, volumes, "
         "volume_gb, snapshots, snapshot_gb, networks, floating_ips, security_groups.")


@click.group("org")
def group() -> None:
    """Organizations (tenants), their quotas and usage."""


@group.command()
@click.argument("name")
@quota_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, quotas: tuple[tuple[str, int | None], ...]) -> None:
    """Create an organization (admin)."""
    client = api(ctx)
    ORG.finish(ctx, client, client.post(ORG.path(), {"name": name, "quotas": dict(quotas)}))


@group.command()
@ORG.argument()
@quota_option
@click.option("--enable/--disable", "enabled", default=None, help="Let its users in again, or lock them out.")
@json_option
@click.pass_context
def update(ctx: click.Context, ref: str, quotas: tuple[tuple[str, int | None], ...], enabled: bool | None) -> None:
    """Change an organization's quotas, or disable or enable it (admin)."""
    body: dict[str, Any] = {}
    if quotas:
        body["quotas"] = dict(quotas)
    if enabled is not None:
        body["status"] = "active" if enabled else "disabled"
    if not body:
        raise click.UsageError("nothing to change: give --quota, --enable or --disable")
    client = api(ctx)
    ORG.finish(ctx, client, client.patch(ORG.path(ref), body))


ORG.add_common(group)
