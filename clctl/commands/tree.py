"""``tree`` and ``ping``: the message tree the frontend drives the hypervisors through."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

import click
import httpx
from click.shell_completion import CompletionItem

from ..client import EXIT_OK, EXIT_REFUSED, ClctlError, url
from ..output import age, echo_json, table
from ..session import api, json_mode, json_option

__all__ = ["order_tree", "ping", "tree"]

#: states that need an operator's eye; anything else a node reports is shown as it is
TROUBLE = {"down", "silent"}
#: late heartbeats: not failed yet, but worth a look
WARNING = {"suspect"}


def order_tree(nodes: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Depth-first from the root(s), children by node id, each with its depth for indenting.

    Nodes no walk reaches (a ``down`` node has no parent; a parent missing from the list) come
    last, in the API's order, at depth 0.
    """
    by_id = {n.get("node_id"): n for n in nodes}
    kids: dict[Any, list[dict[str, Any]]] = {}
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
        for kid in kids.get(node.get("node_id"), []):
            walk(kid, depth + 1)

    for r in roots:
        walk(r, 0)
    for n in nodes:
        if id(n) not in seen:
            walk(n, 0)
    return out


def _state(node: dict[str, Any]) -> str:
    state = str(node.get("state", "?"))
    # Upper case shows in a log or a pipe; the colour only on a terminal (click strips it elsewhere).
    if state in TROUBLE:
        return click.style(f"{state.upper()} !", fg="red", bold=True)
    if state in WARNING:
        return click.style(f"{state.upper()} ?", fg="yellow", bold=True)
    return state


@click.command()
@json_option
@click.pass_context
def tree(ctx: click.Context) -> None:
    """Show the live tree: every node under its parent, with heartbeat age and state.

    CHILDREN is a relay's children against the tree's fan-out, marked '!' above it (it took in
    the children of an agent that failed).
    STATE is up, or DOWN (no route to it) or SILENT (a relay that did not answer the status
    query in time), marked with '!'.  HEARTBEAT is how long ago its parent last heard from it.
    """
    answer = api(ctx).get(url("tree"))
    nodes = answer.get("nodes") if isinstance(answer, dict) else None
    if not isinstance(nodes, list):
        raise ClctlError(f"GET {url('tree')}: the API's answer has no 'nodes' list")
    if json_mode(ctx):
        echo_json(answer)
        return
    fanout = answer.get("fanout")
    fanout = fanout if isinstance(fanout, int) and not isinstance(fanout, bool) else None
    ordered = order_tree([n for n in nodes if isinstance(n, dict)])
    rows = [["  " * depth + str(n.get("node_id")), str(n.get("role", "?")), str(n.get("parent") or "-"),
             _load(n, fanout), age(n.get("heartbeat_age")), _state(n)] for depth, n in ordered]
    click.echo(table(["NODE", "ROLE", "PARENT", "CHILDREN", "HEARTBEAT", "STATE"], rows, right=(3, 4)))
    counts = Counter(str(n.get("state", "?")) for _, n in ordered)
    click.echo(f"{len(ordered)} nodes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    over = [n for _, n in ordered if _over(n, fanout)]
    if over:
        click.echo(f"{len(over)} above the fan-out of {fanout} (marked '!'): they took in the children of "
                   f"an agent that failed")


def _over(node: dict[str, Any], fanout: int | None) -> bool:
    children = node.get("children")
    return fanout is not None and isinstance(children, int) and children > fanout


def _load(node: dict[str, Any], fanout: int | None) -> str:
    """A relay's children against the fan-out (``33/32 !`` when above it); a backend's plain count."""
    children = node.get("children", "-")
    if fanout is None or node.get("role") == "backend":
        return str(children)
    return f"{children}/{fanout}" + (" !" if _over(node, fanout) else "")


def _complete_hosts(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Backends in the live tree; nothing (quietly) when the API cannot be asked."""
    try:
        with api(ctx, httpx.Timeout(2.0)) as client:
            nodes = client.get(url("tree"))["nodes"]
        hosts = [str(n["node_id"]) for n in nodes if n.get("role") == "backend"]
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    return [CompletionItem(h) for h in sorted(hosts) if h.startswith(incomplete)]


@click.command()
@click.argument("hosts", nargs=-1, metavar="[HOST]...", shell_complete=_complete_hosts)
@click.option("--group", metavar="G", help="Ping the hosts of this group of the tree.")
@click.option("--timeout", type=click.FloatRange(0, 300, min_open=True), default=5.0, show_default=True,
              metavar="S", help="How long each host gets to answer.")
@json_option
@click.pass_context
def ping(ctx: click.Context, hosts: tuple[str, ...], group: str | None, timeout: float) -> None:
    """Round-trip a ping through the tree to every host, or to the HOSTs or --group named.

    Exit status 0 if every host answered ok, 1 if any did not.
    """
    if hosts and group:
        raise click.UsageError("name HOSTs or --group, not both")
    # The API holds the request open until the hosts answer or `timeout` passes.
    client = api(ctx, httpx.Timeout(30.0, connect=5.0, read=timeout + 30))
    body = {"hosts": list(dict.fromkeys(hosts)), "group": group, "timeout": timeout}
    answer = client.post(url("tree", "ping"), body)
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, dict):
        raise ClctlError(f"POST {url('tree', 'ping')}: the API's answer has no 'results' map")
    entries = {str(h): r if isinstance(r, dict) else {} for h, r in results.items()}
    failed = sum(1 for r in entries.values() if r.get("status") != "ok")
    if json_mode(ctx):
        echo_json(answer)
    else:
        latencies = [float(r["latency_s"]) * 1000 for r in entries.values()
                     if r.get("status") == "ok" and isinstance(r.get("latency_s"), (int, float))]
        rows = [[h, str(r.get("status")),
                 "-" if r.get("latency_s") is None else f"{float(r['latency_s']) * 1000:.1f}",
                 str(r.get("message") or "")] for h, r in sorted(entries.items())]
        click.echo(table(["HOST", "STATUS", "LATENCY_MS", "MESSAGE"], rows, right=(2,)))
        line = f"{len(entries) - failed} ok, {failed} failed"
        if latencies:
            line += f"; latency p50 {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
        click.echo(line)
    ctx.exit(EXIT_OK if failed == 0 else EXIT_REFUSED)
