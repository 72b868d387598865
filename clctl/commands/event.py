"""``event``: what happened that an operator may want to know."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, when
from ..params import SINCE
from ..resource import Resource

__all__ = ["group"]


def _resource(event: dict[str, Any]) -> str | None:
    return " ".join(str(p) for p in (event.get("resource_type"), event.get("resource_id")) if p) or None


EVENT = Resource("event", "events", (
    Column("TIME", "created_at", when), Column("KIND", "kind"), Column("HOST", "host"),
    Column("RESOURCE", _resource), Column("MESSAGE", "message"),
), ident="id")


@click.group("event")
def group() -> None:
    """Events: hosts going down, drift found, tasks failing."""


EVENT.add_list(group, click.option("--kind", help="Only events of this kind."),
               click.option("--host", help="Only events about this host."),
               click.option("--since", type=SINCE, metavar="TIME",
                            help="Only events since an ISO time (UTC unless it says) or an age: 30s, 15m, 2h, 7d."))
