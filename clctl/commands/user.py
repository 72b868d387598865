"""``user``: the users of an organization."""

from __future__ import annotations

from typing import Any

import click

from ..output import Column, when
from ..params import read_password
from ..resource import Resource
from ..session import api, json_option

__all__ = ["group"]

USER = Resource("user", "users", (
    Column("ID", "id"), Column("NAME", "name"), Column("ROLE", "role"), Column("STATUS", "status"),
    Column("ORG", "org_id"), Column("CREATED", "created_at", when),
))

ROLES = "reader, member, tenant-admin or admin"


@click.group("user")
def group() -> None:
    """Users: admins manage anyone, tenant admins their own organization's."""


@group.command()
@click.argument("name")
@click.option("--role", default="member", show_default=True, help=f"One of {ROLES}.")
@click.option("--org", metavar="ORG", help="Its organization, by id or name (admins only) [default: yours].")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, role: str, org: str | None, password_stdin: bool) -> None:
    """Create a user; its password is asked for twice without echo, or read with --password-stdin."""
    body: dict[str, Any] = {"name": name, "role": role,
                            "password": read_password(password_stdin, "Password for the new user", confirm=True)}
    if org is not None:
        body["org"] = org
    client = api(ctx)
    USER.finish(ctx, client, client.post(USER.path(), body))


@group.command()
@USER.argument()
@click.option("--role", help=f"A new role: {ROLES}.")
@click.option("--password", "set_password", is_flag=True, help="Set a new password (asked for without echo).")
@click.option("--password-stdin", is_flag=True, help="Set a new password, read from the first line of stdin.")
@click.option("--enable/--disable", "enabled", default=None, help="Let the user in again, or lock them out.")
@json_option
@click.pass_context
def update(ctx: click.Context, ref: str, role: str | None, set_password: bool, password_stdin: bool,
           enabled: bool | None) -> None:
    """Change a user's role, password or status.  A new password ends the user's other sessions."""
    body: dict[str, Any] = {}
    if role is not None:
        body["role"] = role
    if set_password or password_stdin:
        body["password"] = read_password(password_stdin, "New password", confirm=True)
    if enabled is not None:
        body["status"] = "active" if enabled else "disabled"
    if not body:
        raise click.UsageError("nothing to change: give --role, --password, --password-stdin, --enable or --disable")
    client = api(ctx)
    USER.finish(ctx, client, client.patch(USER.path(ref), body))


USER.add_common(group)
