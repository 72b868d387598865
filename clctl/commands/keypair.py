"""``keypair``: SSH public keys to put into instances."""

from __future__ import annotations

from pathlib import Path

import click

from ..output import Column, when
from ..resource import Resource
from ..session import api, json_option

__all__ = ["group"]

KEYPAIR = Resource("keypair", "keypairs", (
    Column("ID", "id"), Column("NAME", "name"), Column("FINGERPRINT", "fingerprint"),
    Column("CREATED", "created_at", when),
))


@click.group("keypair")
def group() -> None:
    """SSH keypairs: the public half, for cloud-init to install in instances."""


@group.command()
@click.argument("name")
@click.option("--public-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              metavar="PATH", help="e.g. ~/.ssh/id_ed25519.pub")
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, public_key_file: Path) -> None:
    """Register a public key."""
    try:
        public_key = public_key_file.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {public_key_file}: {exc}", param_hint="--public-key-file") from None
    client = api(ctx)
    KEYPAIR.finish(ctx, client, client.post(KEYPAIR.path(), {"name": name, "public_key": public_key}))


KEYPAIR.add_common(group)
