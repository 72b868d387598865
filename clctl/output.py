"""What clctl prints: aligned tables and key/value records for people, the API's JSON for scripts.

Data goes to stdout; progress and errors go to stderr, so ``clctl --json ... | jq`` always
reads JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import click

__all__ = ["Column", "ProgressLine", "age", "echo_json", "either", "pick", "print_record", "print_table", "size",
           "sort_items", "table", "text", "when"]

Getter = Callable[[dict[str, Any]], Any]


def pick(item: dict[str, Any], key: str) -> Any:
    """``item[key]``, following dots into nested maps (``used.vcpus``); None where anything is missing."""
    value: Any = item
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def either(*keys: str) -> Getter:
    """The first of ``keys`` an item has: e.g. a name where the API gives one, else the id."""
    return lambda item: next((v for v in (pick(item, k) for k in keys) if v is not None), None)


def text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def age(seconds: Any) -> str:
    """``0.2s``, ``14.0s``, ``3m05s``, ``2h10m``, ``3d04h``; ``-`` when there is none."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or math.isnan(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def when(value: Any) -> str:
    """An API timestamp as ``2024-05-01 12:00:03`` (UTC, as the API keeps them)."""
    if not isinstance(value, str):
        return text(value)
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def size(n_bytes: Any) -> str:
    if not isinstance(n_bytes, int):
        return text(n_bytes)
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(frozen=True)
class Column:
    """One column of a resource's table: the key (or function) that reads it and how it looks."""

    header: str
    get: str | Getter
    fmt: Callable[[Any], str] = text
    right: bool = False
    #: what ``--sort`` orders by, when not the value itself (e.g. how full a used/total column is)
    sort: Getter | None = None

    @property
    def name(self) -> str:
        return self.header.lower()

    def value(self, item: dict[str, Any]) -> Any:
        return pick(item, self.get) if isinstance(self.get, str) else self.get(item)

    def cell(self, item: dict[str, Any]) -> str:
        return self.fmt(self.value(item))

    def sort_key(self, item: dict[str, Any]) -> tuple[int, Any]:
        value = self.sort(item) if self.sort else self.value(item)
        # Missing values last; numbers and strings never compared with each other.
        if value is None:
            return (2, "")
        if isinstance(value, (int, float)):
            return (0, value)
        return (1, str(value))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Plain aligned columns, two spaces apart; ``right`` lists the columns to right-align."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    right = set(right)

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def sort_items(items: list[dict[str, Any]], columns: Sequence[Column], by: str | None,
               reverse: bool = False) -> list[dict[str, Any]]:
    if by is None:
        return items[::-1] if reverse else items
    column = next(c for c in columns if c.name == by)
    return sorted(items, key=column.sort_key, reverse=reverse)


def print_table(columns: Sequence[Column], items: Iterable[dict[str, Any]]) -> None:
    rows = [[c.cell(item) for c in columns] for item in items]
    click.echo(table([c.header for c in columns], rows, right=[i for i, c in enumerate(columns) if c.right]))


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, inner in enumerate(value):
            _flatten(f"{prefix}[{i}]", inner, out)
    else:
        out.append((prefix, when(value) if prefix.endswith("_at") else text(value)))


def print_record(item: dict[str, Any], skip: Iterable[str] = ()) -> None:
    """Every field of one resource, a line each; nested maps as ``quotas.instances``."""
    lines: list[tuple[str, str]] = []
    skipped = set(skip)
    for key, value in item.items():
        if key not in skipped:
            _flatten(key, value, lines)
    width = max((len(k) for k, _ in lines), default=0)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}".rstrip())


class ProgressLine:
    """A status line on stderr: rewritten in place on a terminal, else a new line when it changes."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: str | None = None

    def show(self, line: str) -> None:
        if line == self.last:
            return
        self.last = line
        if self.tty:
            click.echo(f"\r\x1b[K{line}", err=True, nl=False)
        else:
            click.echo(line, err=True)

    def end(self) -> None:
        if self.tty and self.last is not None:
            click.echo("", err=True)
        self.last = None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))
