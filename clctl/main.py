"""``clctl``: look at and poke a cloudland control plane from a shell.

Until the REST API exists every command goes through the frontend's local control socket
(:mod:`frontend.control`).  Which socket, in order of precedence:

1. ``--control PATH``
2. the ``CLOUDLAND_CONTROL`` environment variable (``make run`` prints the line to export)
3. ``control_socket:`` in ``$XDG_CONFIG_HOME/cloudland/clctl.yaml`` (default ``~/.config/...``)
4. ``/run/cloudland/frontend.sock``, where a packaged frontend listens

Exit codes: 0 success; 1 the command ran but some host did not answer ok; 2 usage errors and
failures to talk to the frontend (no socket, no answer, an ``{"error": ...}`` reply).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import click
from click.shell_completion import CompletionItem, get_completion_class

__all__ = ["cli", "DEFAULT_CONTROL_SOCKET", "ControlError", "config_file", "resolve_control", "order_tree", "format_age", "table"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Where a packaged frontend listens (``service.config.FrontendConfig.control_socket``).
DEFAULT_CONTROL_SOCKET = "/run/cloudland/frontend.sock"

PROG = "clctl"
COMPLETE_VAR = "_CLCTL_COMPLETE"

F = TypeVar("F", bound=Callable[..., Any])


class ControlError(click.ClickException):
    """Could not get an answer out of the frontend; printed as ``Error: ...`` with exit status 2."""

    exit_code = EXIT_USAGE


# Settings -----------------------------------------------------------------------------------


def config_file() -> Path:
    """``$XDG_CONFIG_HOME/cloudland/clctl.yaml``; the XDG spec says to ignore a relative value."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "cloudland" / "clctl.yaml"


def resolve_control(explicit: str | None) -> str:
    """The control socket to use: ``--control``/``CLOUDLAND_CONTROL``, else the config file, else the default."""
    if explicit:
        return explicit
    path = config_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return DEFAULT_CONTROL_SOCKET
    except OSError as exc:
        raise ControlError(f"cannot read {path}: {exc.strerror or exc}") from None
    import yaml  # only needed when there is a file to read

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ControlError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return DEFAULT_CONTROL_SOCKET
    if not isinstance(data, dict):
        raise ControlError(f"{path} must be a YAML map (e.g. 'control_socket: /run/cloudland/frontend.sock')")
    value = data.get("control_socket")
    if value is None:
        return DEFAULT_CONTROL_SOCKET
    if not isinstance(value, str) or not value:
        raise ControlError(f"{path}: control_socket must be a path")
    return os.path.expanduser(value)


@dataclass
class State:
    control: str | None = None
    json: bool = False


def _state(ctx: click.Context) -> State:
    return ctx.ensure_object(State)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _state(ctx).json = True


def json_option(f: F) -> F:
    """``--json`` on the group and on every command: either place turns machine output on."""
    return click.option("--json", "json_output", is_flag=True, expose_value=False, callback=_set_json,
                        help="Print machine-readable JSON instead of a table.")(f)


# Talking to the frontend ------------------------------------------------------------------


def _check_access(path: str) -> None:
    """Turn 'the socket is in a directory only root can open' into a message that says so."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(parent) and not os.access(parent, os.X_OK):
        raise ControlError(f"cannot reach {path}: permission denied on {parent} (the control socket is root-only; "
                           "try sudo)")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise ControlError(f"cannot open {path}: permission denied (the control socket is root-only; try sudo)")


def call(ctx: click.Context, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One control request; anything but a proper reply becomes a :class:`ControlError`."""
    import msgpack
    import zmq

    from frontend.control import request

    state = _state(ctx)
    # During shell completion the group's callback does not run, so --control/CLOUDLAND_CONTROL
    # is only in the root context's params.
    path = resolve_control(state.control or ctx.find_root().params.get("control"))
    _check_access(path)
    try:
        reply = request(path, message, timeout)
    except TimeoutError:
        raise ControlError(f"the frontend at {path} did not answer within {timeout:g}s") from None
    except ConnectionError as exc:
        raise ControlError(str(exc)) from None
    except (OSError, zmq.ZMQError) as exc:
        raise ControlError(f"cannot talk to the frontend at {path}: {exc}") from None
    except (ValueError, msgpack.UnpackException) as exc:
        raise ControlError(f"malformed reply from the frontend at {path}: {exc}") from None
    if "error" in reply:
        raise ControlError(f"the frontend refused {message.get('op')!r}: {reply['error']}")
    return reply


def _reply_field(reply: dict[str, Any], key: str, kind: type) -> Any:
    value = reply.get(key)
    if not isinstance(value, kind):
        raise ControlError(f"malformed reply from the frontend: no {key!r} {kind.__name__}")
    return value


# Output -------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Plain aligned columns, two spaces apart; ``right`` lists the columns to right-align."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    right = set(right)

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def format_age(age: float | None) -> str:
    """Heartbeat age for people: ``0.2s``, ``14.0s``, ``3m05s``, ``2h10m``; ``-`` when there is none."""
    if age is None or not isinstance(age, (int, float)) or math.isnan(age):
        return "-"
    if age < 60:
        return f"{age:.1f}s"
    seconds = int(age)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_ms(latency_s: float | None) -> str:
    return "-" if latency_s is None else f"{latency_s * 1000:.1f}"


# Commands -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--control", metavar="PATH", envvar="CLOUDLAND_CONTROL", show_envvar=True,
              help="The frontend's control socket [default: control_socket from "
                   "$XDG_CONFIG_HOME/cloudland/clctl.yaml, else /run/cloudland/frontend.sock].")
@json_option
@click.version_option(package_name="cloudland", prog_name=PROG)
@click.pass_context
def cli(ctx: click.Context, control: str | None) -> None:
    """Look at and poke a cloudland control plane through the frontend's control socket.

    Exit status: 0 success, 1 some host did not answer ok, 2 usage error or the frontend
    could not be reached.
    """
    _state(ctx).control = control


def order_tree(nodes: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Depth-first from the root(s), children by node id, each with its depth for indenting.

    Nodes no walk reaches (a ``down`` node has no parent; a parent missing from the list) come
    last, in the frontend's order, at depth 0.
    """
    by_id = {n.get("node_id"): n for n in nodes}
    kids: dict[str, list[dict[str, Any]]] = {}
    for n in nodes:
        parent = n.get("parent")
        if parent is not None and parent in by_id and parent != n.get("node_id"):
            kids.setdefault(parent, []).append(n)
    for siblings in kids.values():
        siblings.sort(key=lambda n: str(n.get("node_id")))
    roots = [n for n in nodes if n.get("role") == "root"] or [n for n in nodes if n.get("parent") is None][:1]
    out: list[tuple[int, dict[str, Any]]] = []
    seen: set[int] = set()

    def walk(node: dict[str, Any], depth: int) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        out.append((depth, node))
        for kid in kids.get(node.get("node_id"), []):  # type: ignore[arg-type]
            walk(kid, depth + 1)

    for r in roots:
        walk(r, 0)
    for n in nodes:
        if id(n) not in seen:
            walk(n, 0)
    return out


@cli.command()
@click.option("--timeout", type=click.FloatRange(0, 60, min_open=True), default=2.0, show_default=True,
              metavar="S", help="How long relays get to report their children.")
@json_option
@click.pass_context
def tree(ctx: click.Context, timeout: float) -> None:
    """Show the live tree: every node under its parent, with heartbeat age and state.

    STATE is up, down (no route to it) or silent (a relay that did not answer the status
    query in time).  HEARTBEAT is how long ago its parent last heard from it.
    """
    # Relays get `timeout` to report; the frontend gives up on them then and answers at once.
    reply = call(ctx, {"op": "tree", "timeout": timeout}, timeout + 5)
    nodes = [n for n in _reply_field(reply, "nodes", list) if isinstance(n, dict)]
    ordered = order_tree(nodes)
    if _state(ctx).json:
        _emit_json([n for _, n in ordered])
        return
    rows = [
        ["  " * depth + str(n.get("node_id")), str(n.get("role", "?")), str(n.get("parent") or "-"),
         str(n.get("children", "-")), format_age(n.get("heartbeat_age")), str(n.get("state", "?"))]
        for depth, n in ordered
    ]
    click.echo(table(["NODE", "ROLE", "PARENT", "CHILDREN", "HEARTBEAT", "STATE"], rows, right=(3, 4)))


def _complete_hosts(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Backend ids from the live tree; nothing (quietly) when the frontend cannot be asked."""
    try:
        reply = call(ctx, {"op": "tree", "timeout": 1.0}, 3.0)
        hosts = [n["node_id"] for n in reply.get("nodes", []) if n.get("role") == "backend"]
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    return [CompletionItem(h) for h in sorted(hosts) if h.startswith(incomplete)]


@cli.command()
@click.argument("hosts", nargs=-1, metavar="[HOST]...", shell_complete=_complete_hosts)
@click.option("--timeout", type=click.FloatRange(0, 86400, min_open=True), default=5.0, show_default=True,
              metavar="S", help="How long each host gets to answer.")
@json_option
@click.pass_context
def ping(ctx: click.Context, hosts: tuple[str, ...], timeout: float) -> None:
    """Round-trip a ping through the tree to every host, or to the HOSTs named.

    Exit status 0 if every host answered ok, 1 if any did not.
    """
    wanted = list(dict.fromkeys(hosts)) or None
    # The frontend waits up to timeout + 5 s for the results; give it a little more than that.
    reply = call(ctx, {"op": "submit", "command": "ping", "hosts": wanted, "timeout": timeout}, timeout + 10)
    results = []
    for host, entry in sorted(_reply_field(reply, "results", dict).items()):
        if not isinstance(entry, dict):
            raise ControlError(f"malformed ping result from the frontend: {entry!r}")
        latency = entry.get("latency_s")
        results.append({"host": str(host), "status": str(entry.get("status")),
                        "latency_ms": None if latency is None else round(float(latency) * 1000, 3),
                        "message": entry.get("message") or ""})
    ok_latencies = [r["latency_ms"] for r in results if r["status"] == "ok" and r["latency_ms"] is not None]
    n_ok = sum(1 for r in results if r["status"] == "ok")
    n_failed = len(results) - n_ok
    summary = {
        "ok": n_ok,
        "failed": n_failed,
        "p50_ms": round(statistics.median(ok_latencies), 3) if ok_latencies else None,
        "max_ms": round(max(ok_latencies), 3) if ok_latencies else None,
    }
    if _state(ctx).json:
        _emit_json({"results": results, "summary": summary})
    else:
        rows = [[r["host"], r["status"], format_ms(None if r["latency_ms"] is None else r["latency_ms"] / 1000),
                 r["message"]] for r in results]
        click.echo(table(["HOST", "STATUS", "LATENCY_MS", "MESSAGE"], rows, right=(2,)))
        line = f"{n_ok} ok, {n_failed} failed"
        if ok_latencies:
            line += f"; latency p50 {summary['p50_ms']:.1f} ms, max {summary['max_ms']:.1f} ms"
        click.echo(line)
    ctx.exit(EXIT_OK if n_failed == 0 else EXIT_FAILED)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash:  eval "$(clctl completion bash)"   (e.g. in ~/.bashrc)
    zsh:   eval "$(clctl completion zsh)"    (e.g. in ~/.zshrc)
    fish:  clctl completion fish > ~/.config/fish/completions/clctl.fish
    """
    cls = get_completion_class(shell)
    assert cls is not None  # click registers all three
    comp = cls(cli, {}, PROG, COMPLETE_VAR)
    # ShellComplete.source(), but without BashComplete's check that runs `bash --version`.
    click.echo(comp.source_template % comp.source_vars())

