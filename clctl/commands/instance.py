"""``instance``: virtual machines, and what can be done to them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import liveconsole
from ..output import Column, when
from ..params import NIC
from ..resource import ALL_ORGS, Resource
from ..session import api, emit, json_option, wait_option
from .image import IMAGE

__all__ = ["group"]


def _addresses(instance: dict[str, Any]) -> list[str]:
    return [str(p.get("ip_address")) for p in instance.get("ports") or [] if isinstance(p, dict)]


INSTANCE = Resource("instance", "instances", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"), Column("POWER", "power_state"),
    Column("VCPUS", "vcpus", right=True), Column("MEMORY_MB", "memory_mb", right=True),
    Column("HYPERVISOR", "host"), Column("ADDRESSES", _addresses), Column("CREATED", "created_at", when),
))


@click.group("instance")
def group() -> None:
    """Instances: create, list, start, stop, reboot, resize, image and delete them."""


@group.command()
@click.argument("name")
@click.option("--flavor", required=True, help="Flavor id or name.")
@click.option("--image", required=True, help="Image id or name.")
@click.option("--keypair", help="Keypair whose public key cloud-init installs.")
@click.option("--user-data-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="cloud-init user data.")
@click.option("--nic", "nics", type=NIC, multiple=True, metavar="network=NET|subnet=S|port=P[,ip=A.B.C.D]",
              help="A network interface, in order (repeatable); ip= asks for a fixed address.")
@click.option("--security-group", "security_groups", multiple=True, metavar="SG", help="Repeatable.")
@click.option("--server-group", help="Keep it apart from the group's other instances.")
@click.option("--zone", help="Availability zone to place it in.")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, flavor: str, image: str, keypair: str | None, user_data_file: Path | None,
           nics: tuple[dict[str, str], ...], security_groups: tuple[str, ...], server_group: str | None,
           zone: str | None, wait: bool) -> None:
    """Create and boot an instance."""
    body: dict[str, Any] = {"name": name, "flavor": flavor, "image": image}
    if user_data_file is not None:
        try:
            body["user_data"] = user_data_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {user_data_file}: {exc}", param_hint="--user-data-file") from None
    # Options not given are left out, so the API's defaults apply.
    optional = {"keypair": keypair, "nics": list(nics), "security_groups": list(security_groups),
                "server_group": server_group, "zone": zone}
    body.update({k: v for k, v in optional.items() if v})
    client = api(ctx)
    INSTANCE.finish(ctx, client, client.post(INSTANCE.path(), body), wait)


def _action(verb: str, summary: str) -> None:
    @group.command(verb, help=summary)
    @INSTANCE.argument()
    @wait_option
    @json_option
    @click.pass_context
    def action(ctx: click.Context, ref: str, wait: bool) -> None:
        client = api(ctx)
        INSTANCE.finish(ctx, client, client.post(INSTANCE.path(ref, verb)), wait)


_action("start", "Power an instance on.")
_action("stop", "Shut an instance down.")
_action("reboot", "Reboot an instance.")


@group.command()
@INSTANCE.argument()
@click.option("--flavor", required=True, help="The new flavor, by id or name.")
@wait_option
@json_option
@click.pass_context
def resize(ctx: click.Context, ref: str, flavor: str, wait: bool) -> None:
    """Give an instance another flavor."""
    client = api(ctx)
    INSTANCE.finish(ctx, client, client.post(INSTANCE.path(ref, "resize"), {"flavor": flavor}), wait)


@group.command("image")
@INSTANCE.argument()
@click.argument("name")
@wait_option
@json_option
@click.pass_context
def image(ctx: click.Context, ref: str, name: str, wait: bool) -> None:
    """Make image NAME of a stopped instance's disk.

    Stop the instance first ('clctl instance stop'): an active one is refused.  Its hypervisor
    flattens its root disk into a self-contained qcow2 and sends it to the frontend, which checks
    and stores it like an uploaded image: a private image of your organization, with the
    instance's disk size as its minimum disk, launchable on any hypervisor.  If it fails, nothing
    of the image is kept and the task says why.
    """
    client = api(ctx)
    IMAGE.finish(ctx, client, client.post(INSTANCE.path(ref, "image"), {"name": name}), wait)


@group.command()
@INSTANCE.argument()
@click.option("--bytes", "size", type=click.IntRange(1, 1 << 20), default=65536, show_default=True,
              help="How much of the end of the log to show.")
@click.option("--attach", is_flag=True, help="Open the live serial console instead: type into it; Ctrl-] detaches.")
@click.option("--watch", is_flag=True, help="With --attach: only watch, never type (others may type meanwhile).")
@json_option
@click.pass_context
def console(ctx: click.Context, ref: str, size: int, attach: bool, watch: bool) -> None:
    """Show the end of an instance's serial console log (and, to admins, where its VNC display is).

    With --attach, the live console of an active instance: what you type goes to the guest, what
    it prints comes back, until Ctrl-] detaches. One user types at a time; whoever attaches while
    someone types watches, and may type once they leave. An idle console (nothing typed or printed
    for the cloud's api.console_idle_timeout_s) is closed.
    """
    if watch and not attach:
        raise click.UsageError("--watch goes with --attach")
    if attach:
        client = api(ctx)
        liveconsole.attach(lambda: client.websocket(INSTANCE.path(ref, "console", "live"),
                                                    {"mode": "watch" if watch else "write"}),
                           ref, sys.stdin.buffer, sys.stdout.buffer)
        return
    answer = api(ctx).get(INSTANCE.path(ref, "console"), params={"bytes": size})

    def human(data: dict[str, Any]) -> None:
        click.echo(data.get("log", ""), nl=False)
        if data.get("vnc"):
            click.echo(f"VNC: {data['vnc']} (host:address:port on the hypervisor)", err=True)

    emit(ctx, answer, human)


INSTANCE.add_common(group, ALL_ORGS, asynchronous=True)
