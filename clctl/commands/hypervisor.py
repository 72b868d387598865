"""``hypervisor``: the hosts instances run on, their capacity and heartbeats, and which nodes may
join the tree: enrolment tokens and revocation (admin)."""

from __future__ import annotations

from typing import Any, Callable

import click

from ..client import url
from ..output import Column, age, echo_json, pick, print_record, print_table, when
from ..params import DURATION
from ..resource import Resource
from ..session import api, emit, json_mode, json_option

__all__ = ["group"]


def _used_of_total(header: str, key: str, unit: Callable[[Any], str] = str) -> Column:
    """``used/total``, sorted by how full the host is."""

    def cell(host: dict[str, Any]) -> str:
        used, total = pick(host, f"used.{key}"), pick(host, f"total.{key}")
        return "-" if used is None or total is None else f"{unit(used)}/{unit(total)}"

    def fullness(host: dict[str, Any]) -> float | None:
        used, total = pick(host, f"used.{key}"), pick(host, f"total.{key}")
        if not isinstance(used, (int, float)) or not isinstance(total, (int, float)):
            return None
        return used / total if total else float(used > 0)

    return Column(header, cell, fmt=str, right=True, sort=fullness)


HYPERVISOR = Resource("hypervisor", "hypervisors", (
    Column("NAME", "name"), Column("STATUS", lambda host: host.get("tree_state") or host.get("status")),
    Column("ZONE", "zone"), Column("ENABLED", "enabled"),
    _used_of_total("VCPUS", "vcpus"),
    _used_of_total("MEMORY_GIB", "memory_mb", lambda mb: f"{mb / 1024:.1f}"),
    _used_of_total("DISK_GB", "disk_gb"),
    Column("INSTANCES", "instances", right=True),
    Column("HEARTBEAT", "heartbeat_age_s", age, right=True),
    Column("LOAD", "load", lambda load: "-" if load is None else f"{load:.2f}", right=True),
))


@click.group("hypervisor")
def group() -> None:
    """Hypervisors: registered when their backends join the tree (admin)."""


HYPERVISOR.add_list(group, help="List hypervisors: state (up, suspect: heartbeats late, down), capacity "
                               "used/total, instances, heartbeat age and load.")
HYPERVISOR.add_show(group)


def _switch(enabled: bool) -> None:
    verb = "enable" if enabled else "disable"

    @group.command(verb, help=f"{verb.capitalize()} a hypervisor for new instances; the ones on it stay.")
    @HYPERVISOR.argument()
    @json_option
    @click.pass_context
    def switch(ctx: click.Context, ref: str) -> None:
        client = api(ctx)
        HYPERVISOR.finish(ctx, client, client.patch(HYPERVISOR.path(ref), {"enabled": enabled}))


_switch(True)
_switch(False)


# Enrolment: which nodes may join the tree ---------------------------------------------------


ENROLMENT_COLUMNS = (
    Column("NAME", "name"), Column("ROLE", "role"), Column("STATE", "state"),
    Column("CREATED", "created_at", when), Column("EXPIRES", "expires_at", when), Column("USED", "used_at", when),
)


def _how_to_use(issued: dict[str, Any]) -> str:
    name, role = issued.get("name"), issued.get("role")
    daemon = "agent" if role == "agent" else "backend"
    token_file = "/etc/cloudland/enrolment-token"
    return f"""Enrolment token for {role} {name}, good once, until {when(issued.get("expires_at"))} UTC:

  {issued.get("token")}

On {name}, save it in a file only root can read (e.g. {token_file},
mode 0600) and put these lines in /etc/cloudland/{daemon}.yaml before starting
cloudland-{daemon}:

  frontend: {issued.get("registrar")}
  enrolment_token_file: {token_file}

Its first start enrols its key with the token; later starts need none."""


@group.command("enroll")
@click.argument("name")
@click.option("--agent", is_flag=True, help="Enrol an agent (a relay) instead of a backend.")
@click.option("--ttl", type=DURATION, default="1h", show_default=True, metavar="DURATION",
              help="How long the token stays good: 30m, 1h, 7d (at most 7 days).")
@json_option
@click.pass_context
def enroll(ctx: click.Context, name: str, agent: bool, ttl: int) -> None:
    """Issue a one-time token that lets the new node NAME join the tree.

    The node presents it once, at its first start, to have its key enrolled.  The token is
    shown only now: it is a secret until it is used or expires.
    """
    answer = api(ctx).post(url("hypervisors", "enrolments"),
                           {"name": name, "role": "agent" if agent else "backend", "ttl_s": ttl})
    emit(ctx, answer, lambda issued: click.echo(_how_to_use(issued)))


@group.command("enrolments")
@json_option
@click.pass_context
def enrolments(ctx: click.Context) -> None:
    """List enrolment tokens, newest first: pending, used or expired (never their secrets)."""
    answer = api(ctx).get(url("hypervisors", "enrolments"))
    if json_mode(ctx):
        echo_json(answer)
    else:
        print_table(ENROLMENT_COLUMNS, answer.get("items") or [])


@group.command("revoke")
@HYPERVISOR.argument("name", metavar="NAME")
@json_option
@click.pass_context
def revoke(ctx: click.Context, name: str) -> None:
    """Revoke the key of the backend or agent NAME: it is cut off the tree at once and refused
    from then on, and a hypervisor of that name is disabled for new instances.

    Its instances stay where they are.  To let it back in (after a reinstall, say), issue a
    new token with enroll, and on the node delete tree.key and root.pub from its data_dir (it
    makes a new key pair) before it starts with the new token.
    """
    answer = api(ctx).post(url("hypervisors", name, "revoke"))

    def show(node: dict[str, Any]) -> None:
        print_record(node)
        click.echo(f"{node.get('name')} is cut off from the tree and its key is refused from now on")

    emit(ctx, answer, show)


@group.command("delete")
@HYPERVISOR.argument("name", metavar="NAME")
@json_option
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Remove the hypervisor NAME from the cloud for good (a dead or retired host).

    Revoke it first, then delete what is still on it (instance, volume and snapshot deletes go
    without asking a revoked host: its disks are gone with it).  Its guests, if the machine still
    runs, are left to whoever wipes it.
    """
    api(ctx).delete(url("hypervisors", name))
    if not json_mode(ctx):
        click.echo(f"removed hypervisor {name}")
