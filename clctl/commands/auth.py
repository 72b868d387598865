"""``login``, ``logout`` and ``whoami``."""

from __future__ import annotations

from typing import Any

import click

from .. import config
from ..client import EXIT_UNREACHABLE, Api, ClctlError, url
from ..output import print_record, when
from ..params import read_password
from ..session import api, ca_file_option, emit, json_option, settings

__all__ = ["login", "logout", "whoami"]


@click.command()
@click.option("--endpoint", "endpoints", metavar="URL", multiple=True,
              help="The API to log in to; repeated (or comma-separated) for a cloud's several frontends [default: "
                   "clctl's --endpoint or CLOUDLAND_ENDPOINT, else the ones saved by the last login, else "
                   "https://127.0.0.1:8080].")
@click.option("--username", "-u", metavar="NAME", help="Prompted for when not given.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@ca_file_option
@json_option
@click.pass_context
def login(ctx: click.Context, endpoints: tuple[str, ...], username: str | None, password_stdin: bool,
          ca_file: str | None) -> None:
    """Log in, and save the endpoints, token and CA file for later commands.

    They go to ~/.config/cloudland/clctl.yaml (or under $XDG_CONFIG_HOME), readable only by
    you.  The password is asked for without echo, or read with --password-stdin.  A frontend
    with a generated (self-signed) certificate needs --ca-file with its <data_dir>/tls/api.crt.
    """
    s = settings(ctx, endpoints=endpoints, ca_file=ca_file)
    if username is None:
        if password_stdin:
            raise click.UsageError("--password-stdin needs --username")
        username = str(click.prompt("Username"))
    password = read_password(password_stdin)
    with Api(s.endpoints, None, ca_file=s.ca_file, on_answered=config.remember_answered) as client:
        answer = client.request("POST", url("tokens"), json={"username": username, "password": password}, auth=False)
        endpoint = client.endpoint
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        raise ClctlError(f"POST {url('tokens')}: the API's answer holds no token")
    path = config.save_login(s.endpoints, answer["token"], s.ca_file)

    def human(a: dict[str, Any]) -> None:
        click.echo(f"logged in to {endpoint} as {username} ({a.get('role')}) until {when(a.get('expires_at'))}; "
                   f"token saved in {path}")

    emit(ctx, answer, human)


@click.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """End this session: the API revokes the token, and clctl forgets it."""
    s = settings(ctx)
    if not s.token:
        raise ClctlError("not logged in", EXIT_UNREACHABLE)
    note = ""
    client = api(ctx)
    try:
        client.delete(url("tokens", "current"))
    except ClctlError as exc:
        # A token the API no longer takes (expired, revoked) is as logged out as it gets.
        if exc.status != 401:
            raise
        note = " (the API had already ended this session)"
    config.forget_token(s.token)
    click.echo(f"logged out of {client.endpoint}{note}")


@click.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context) -> None:
    """Who the token belongs to, and which API (of the cloud's endpoints, the one that answered) it is for."""
    client = api(ctx)
    emit(ctx, client.get(url("whoami")), lambda me: print_record({**me, "endpoint": client.endpoint}))
