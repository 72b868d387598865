"""``event``: what happened that an operator may want to know."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..output import Column, echo_json, print_table, when
from ..params import SINCE
from ..resource import ALL_ORGS, Resource, with_org
from ..session import api, json_mode, json_option

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


#: seconds between polls of --follow, and the most events one poll asks for (the API's maximum)
FOLLOW_EVERY = 2.0
FOLLOW_PAGE = 1000


@group.command("list")
@click.option("--kind", help="Only events of this kind (a prefix: drift matches drift.vanished).")
@click.option("--host", help="Only events about this host (tenants: by the alias they are shown).")
@click.option("--since", type=SINCE, metavar="TIME",
              help="Only events since an ISO time (UTC unless it says) or an age: 30s, 15m, 2h, 7d.")
@click.option("--follow", is_flag=True, help="Keep printing new events as they happen, until Ctrl-C.")
@ALL_ORGS
@json_option
@click.pass_context
def list_(ctx: click.Context, kind: str | None, host: str | None, since: str | None, follow: bool,
          all_orgs: bool | None) -> None:
    """List events, oldest first (with --json and --follow: one JSON object per line)."""
    client = api(ctx)
    columns = with_org(EVENT.columns, all_orgs)
    filters: dict[str, Any] = {"kind": kind, "host": host, "since": since, "all_orgs": all_orgs}
    events = list(reversed(client.get(EVENT.path(), params=filters)["items"]))
    if not follow:
        if json_mode(ctx):
            echo_json({"items": events})
        else:
            print_table(columns, events)
        return
    seen: set[str] = set()
    while True:
        fresh = [e for e in events if e["id"] not in seen]
        for event in fresh:
            if json_mode(ctx):
                click.echo(json.dumps(event))
            else:
                click.echo("  ".join(column.cell(event) for column in columns))
        seen.update(e["id"] for e in fresh)
        if events:
            # Inclusive, so events of the same instant as the last one are not missed; ``seen`` drops repeats.
            # The most a page holds: the API answers the newest first, so more in one poll would be lost.
            filters.update(since=events[-1]["created_at"], limit=FOLLOW_PAGE)
        time.sleep(FOLLOW_EVERY)
        events = list(reversed(client.get(EVENT.path(), params=filters)["items"]))
