"""What one clctl invocation carries from the root group to its command: the API and ``--json``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import click
import httpx

from . import config
from .client import DEFAULT_TIMEOUT, EXIT_UNREACHABLE, Api, ClctlError
from .output import echo_json

__all__ = ["api", "ca_file_option", "emit", "json_mode", "json_option", "settings", "wait_option"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    json: bool = False


def _state(ctx: click.Context) -> State:
    return ctx.find_root().ensure_object(State)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _state(ctx).json = True


def json_option(f: F) -> F:
    """``--json`` on the root group and on every command: either place turns machine output on."""
    return click.option("--json", "json_output", is_flag=True, expose_value=False, callback=_set_json,
                        help="Print the API's JSON instead of a table.")(f)


def ca_file_option(f: F) -> F:
    """``--ca-file`` on the root group (with its environment variable) and on ``login``."""
    return click.option("--ca-file", metavar="PATH", envvar="CLOUDLAND_CA_FILE", show_envvar=True,
                        type=click.Path(exists=True, dir_okay=False),
                        help="The PEM certificate the API's TLS certificate is checked against (a frontend's "
                             "generated one: its <data_dir>/tls/api.crt) [default: the one saved by 'clctl "
                             "login' for this endpoint, else the system's CAs].")(f)


def wait_option(f: F) -> F:
    return click.option("--wait", is_flag=True,
                        help="Follow the task until it ends; exit 1 if it fails.")(f)


def json_mode(ctx: click.Context) -> bool:
    return _state(ctx).json


def emit(ctx: click.Context, data: Any, human: Callable[[Any], None]) -> None:
    """``data`` as the API's JSON with ``--json``, else as ``human`` renders it."""
    if json_mode(ctx):
        echo_json(data)
    else:
        human(data)


def settings(ctx: click.Context, endpoints: tuple[str, ...] = (), ca_file: str | None = None) -> config.Settings:
    """What the root group's options say, unless a command's own ``endpoints``/``ca_file`` override them."""
    # The root's params, not state set by its callback: during shell completion callbacks do not run.
    params = ctx.find_root().params
    return config.resolve(endpoints or params.get("endpoints") or (), params.get("token"),
                          ca_file or params.get("ca_file"))


def api(ctx: click.Context, timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> Api:
    """A client for this command, closed when the command ends."""
    s = settings(ctx)
    note = None
    if s.login_file is not None:
        # A saved login outlives its cloud (a local one after `make clean`): say so, rather
        # than leave the user with a refused connection or a missing certificate file.
        cloud = " or ".join(s.endpoints)
        whose = f"The token saved by 'clctl login' (in {s.login_file}) belongs to the cloud at {cloud}"
        todo = "log in to the one you use now: clctl login --endpoint URL [--ca-file FILE]"
        if s.ca_file is not None and not os.path.exists(s.ca_file):
            raise ClctlError(f"{whose}, whose certificate file {s.ca_file}, saved with the token, is gone: so is that "
                             f"cloud, most likely (a local cloud after 'make clean', say); {todo}", EXIT_UNREACHABLE)
        note = (f"{whose}, which no longer answers there; if that cloud is gone (a local cloud after 'make clean', "
                f"say), {todo}")
    client = Api(config.answered_last_first(s.endpoints), s.token, timeout, s.ca_file,
                 on_answered=config.remember_answered, unreachable_note=note)
    ctx.call_on_close(client.close)
    return client
