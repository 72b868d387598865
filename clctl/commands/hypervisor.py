"""``hypervisor``: the hosts instances run on, their capacity and heartbeats (admin)."""

from __future__ import annotations

from typing import Any, Callable

import click

from ..output import Column, age, pick
from ..resource import Resource
from ..session import api, json_option

__all__ = ["group"]


def _used_of_total(header: str, key: str, unit: Callable[[Any], str] = str) -> Column:
    """``used/total``, sorted by how full the host is."""

    def cell(host: dict[str, Any]) -> str:
        used, total = pick(host, f"used.{key}"), pick(host, f"total.{key}")
        return "-" if used is None or total is None else f"{unit(used)}/{unit(total)}"

    def fullness(host: dict[str, Any]) -> float | None:
        used, total = pick(host, f"used.{key}"), pick(host, f"total.{key}")
        if not isinstance(used, (int, float)) or not isinstance(total, (int, float)):
            return None
        return used / total if total else float(used > 0)

    return Column(header, cell, fmt=str, right=True, sort=fullness)


HYPERVISOR = Resource("hypervisor", "hypervisors", (
    Column("NAME", "name"), Column("STATUS", "status"), Column("ZONE", "zone"), Column("ENABLED", "enabled"),
    _used_of_total("VCPUS", "vcpus"),
    _used_of_total("MEMORY_GIB", "memory_mb", lambda mb: f"{mb / 1024:.1f}"),
    _used_of_total("DISK_GB", "disk_gb"),
    Column("INSTANCES", "instances", right=True),
    Column("HEARTBEAT", "heartbeat_age_s", age, right=True),
))


@click.group("hypervisor")
def group() -> None:
    """Hypervisors: registered when their backends join the tree (admin)."""


HYPERVISOR.add_list(group, help="List hypervisors: capacity used/total, instances and heartbeat age.")
HYPERVISOR.add_show(group)


def _switch(enabled: bool) -> None:
    verb = "enable" if enabled else "disable"

    @group.command(verb, help=f"{verb.capitalize()} a hypervisor for new instances; the ones on it stay.")
    @HYPERVISOR.argument()
    @json_option
    @click.pass_context
    def switch(ctx: click.Context, ref: str) -> None:
        client = api(ctx)
        HYPERVISOR.finish(ctx, client, client.patch(HYPERVISOR.path(ref), {"enabled": enabled}))


_switch(True)
_switch(False)
