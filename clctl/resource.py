"""The commands every resource has (list, show, delete), made from a small description of it.

A resource group module describes its table once::

    FLAVOR = Resource("flavor", "flavors", (Column("ID", "id"), Column("NAME", "name"), ...))
    FLAVOR.add_list(flavor)

and writes by hand only what differs between resources: ``create`` and the actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import click
import httpx
from click.shell_completion import CompletionItem

from .client import Api, ClctlError, url
from .output import Column, echo_json, print_record, print_table, sort_items
from .session import api, emit, json_mode, json_option, wait_option
from .tasks import finish

__all__ = ["ALL_ORGS", "Resource", "with_org"]

#: shell completion must answer at once or not at all
_COMPLETION_TIMEOUT = httpx.Timeout(2.0)

#: ``--all-orgs``, a filter of lists: sent only when given, as the API's ``all_orgs=true``
ALL_ORGS = click.option("--all-orgs", "all_orgs", is_flag=True,
                        callback=lambda _ctx, _param, on: True if on else None,
                        help="Every organization's, not only yours (admins only; the audit log records it).")
_ORG = Column("ORG", "org_id")


def with_org(columns: tuple[Column, ...], all_orgs: bool | None) -> tuple[Column, ...]:
    """The table's columns, led by the organization's where the rows are of several."""
    return (_ORG, *columns) if all_orgs else columns


@dataclass(frozen=True)
class Resource:
    #: what the user calls one: "flavor", "security group"
    noun: str
    #: its path under /v1: "flavors"
    collection: str
    columns: tuple[Column, ...]
    #: the field that names one in messages and completion
    ident: str = "name"
    #: a list field shown as a table under one's record, not in it: ("rules", columns)
    details: tuple[str, tuple[Column, ...]] | None = None

    def path(self, *parts: str) -> str:
        return url(self.collection, *parts)

    def show(self, item: dict[str, Any]) -> None:
        if self.details is None:
            print_record(item)
            return
        key, columns = self.details
        print_record(item, skip=(key,))
        rows = item.get(key)
        if isinstance(rows, list) and rows:
            click.echo()
            print_table(columns, rows)

    def complete(self, ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        """Names (and ids) of existing ones; nothing, quietly, when the API cannot be asked."""
        try:
            with api(ctx, _COMPLETION_TIMEOUT) as client:
                items = client.get(self.path())["items"]
        except Exception:  # completion must never print a traceback into the user's shell
            return []
        names = {str(i.get(self.ident) or i.get("id")) for i in items if isinstance(i, dict)}
        return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]

    def argument(self, name: str = "ref", metavar: str | None = None) -> Callable[[Any], Any]:
        """``REF``: one of these by id or name, completed from the API."""
        return click.argument(name, metavar=metavar or self.noun.upper().replace(" ", "_"),
                              shell_complete=self.complete)

    def finish(self, ctx: click.Context, client: Api, answer: Any, wait: bool = False) -> None:
        """Print what a create or an action answered (the resource, or a task that ``wait`` follows)."""
        finish(ctx, client, answer, wait=wait, show=self.show, collection=self.collection)

    # The commands -------------------------------------------------------------------------

    def add_list(self, group: click.Group, *options: Callable[[Any], Any], help: str | None = None) -> None:
        """``list``; each of ``options`` is a filter, sent as the query parameter of its name."""

        def list_(ctx: click.Context, /, sort: str | None, reverse: bool, **filters: Any) -> None:
            answer = api(ctx).get(self.path(), params=filters)
            items = answer.get("items") if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise ClctlError(f"GET {self.path()}: the API's answer has no 'items' list")
            items = sort_items(items, self.columns, sort, reverse)
            if json_mode(ctx):
                echo_json({**answer, "items": items})
            else:
                print_table(with_org(self.columns, filters.get("all_orgs")), items)

        for option in reversed(options):
            list_ = option(list_)
        list_ = click.option("--sort", type=click.Choice([c.name for c in self.columns]), metavar="FIELD",
                             help=f"Order by this column: {', '.join(c.name for c in self.columns)}.")(list_)
        list_ = click.option("--reverse", is_flag=True, help="Reverse the order.")(list_)
        group.command("list", help=help or f"List {self.noun}s.")(json_option(click.pass_context(list_)))

    def add_show(self, group: click.Group) -> None:
        @group.command("show", help=f"Show one {self.noun}, by id or name.")
        @self.argument()
        @json_option
        @click.pass_context
        def show(ctx: click.Context, ref: str) -> None:
            emit(ctx, api(ctx).get(self.path(ref)), self.show)

    def add_delete(self, group: click.Group, asynchronous: bool = False) -> None:
        def delete(ctx: click.Context, ref: str, wait: bool = False) -> None:
            client = api(ctx)
            answer = client.delete(self.path(ref))
            if answer is None:
                if not json_mode(ctx):
                    click.echo(f"deleted {self.noun} {ref}")
                return
            finish(ctx, client, answer, wait=wait, show=self.show, collection=None)

        if asynchronous:
            delete = wait_option(delete)
        group.command("delete", help=f"Delete a {self.noun}.")(self.argument()(json_option(click.pass_context(delete))))

    def add_common(self, group: click.Group, *list_options: Callable[[Any], Any], asynchronous: bool = False) -> None:
        """list, show and delete."""
        self.add_list(group, *list_options)
        self.add_show(group)
        self.add_delete(group, asynchronous)
