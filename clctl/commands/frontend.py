"""``frontend``: the frontend processes of the cloud, which one leads, and when each was last heard of."""

from __future__ import annotations

import click

from ..output import Column, age, when
from ..resource import Resource

__all__ = ["group"]

FRONTEND = Resource("frontend", "frontends", (
    Column("NODE", "node_id"), Column("ROLE", "role"), Column("GENERATION", "generation"),
    Column("STATUS", "status"), Column("SEEN", "seen_age_s", age, right=True), Column("API", "api_url"),
    Column("STARTED", "started_at", when), Column("HOLDER", "holder"),
), ident="holder")


@click.group("frontend")
def group() -> None:
    """The frontends serving the cloud (admins only): on PostgreSQL one leads and the others stand by."""


FRONTEND.add_list(group, help="List the frontends, the leader first: role, lease generation, and how long ago each "
                              "renewed or tried to take the lease (SEEN); gone ones are kept for a day.")
