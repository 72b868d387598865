"""``audit``: the audit log of mutating calls to the API, for admins."""

from __future__ import annotations

import click

from ..output import Column, when
from ..params import SINCE
from ..resource import Resource

__all__ = ["group"]

AUDIT = Resource("audit record", "audit", (
    Column("TIME", "created_at", when), Column("USER", "user_name"), Column("SOURCE", "source"),
    Column("METHOD", "method"), Column("ROUTE", "route"), Column("RESOURCE", "resource_id"), Column("STATUS", "status"),
    Column("ERROR", "error"), Column("FRONTEND", "frontend"),
), ident="id")


@click.group("audit")
def group() -> None:
    """The audit log: every POST, PUT, PATCH and DELETE made to the API, refused ones too (admins only)."""


AUDIT.add_list(
    group,
    click.option("--user", metavar="NAME", help="Only calls by this user (a name or an id)."),
    click.option("--method", type=click.Choice(["GET", "POST", "PUT", "PATCH", "DELETE", "WS"], case_sensitive=False)),
    click.option("--status", type=click.IntRange(100, 599), help="Only calls answered with this HTTP status."),
    click.option("--since", type=SINCE, metavar="TIME",
                 help="Only calls since an ISO time (UTC unless it says) or an age: 30s, 15m, 2h, 7d."),
    click.option("--path-prefix", metavar="PATH", help="Only calls whose route starts with it, e.g. /v1/instances."),
    help="List the audit log, newest first.")
