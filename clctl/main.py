"""``clctl``: drive a cloudland cloud through its REST API.

Which API, and as whom, in order of precedence: ``--endpoint``/``--token``/``--ca-file``, then
``CLOUDLAND_ENDPOINT``/``CLOUDLAND_TOKEN``/``CLOUDLAND_CA_FILE``, then what ``clctl login`` saved
(see :mod:`clctl.config`), then ``https://127.0.0.1:8080``, no token and the system's CAs.
"""

from __future__ import annotations

import click

from .commands import (audit, auth, completion, event, fip, flavor, frontend, hypervisor, image, instance, keypair,
                       network, org, port, router, server_group, sg, snapshot, subnet, task, tree, user, volume, zone)
from .session import ca_file_option, json_option

__all__ = ["PROG", "cli"]

PROG = "clctl"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--endpoint", "endpoints", metavar="URL", multiple=True, envvar="CLOUDLAND_ENDPOINT", show_envvar=True,
              help="The API, e.g. https://controller:8080; repeated (or comma-separated) for a cloud's several "
                   "frontends, tried in turn [default: the ones saved by 'clctl login', else "
                   "https://127.0.0.1:8080].")
@click.option("--token", metavar="TOKEN", envvar="CLOUDLAND_TOKEN", show_envvar=True,
              help="A bearer token [default: the one saved by 'clctl login'].")
@ca_file_option
@json_option
@click.version_option(package_name="cloudland", prog_name=PROG)
def cli(endpoints: tuple[str, ...], token: str | None, ca_file: str | None) -> None:
    """Drive a cloudland cloud through its REST API.

    Start with 'clctl login'.  Every command takes --json to print the API's JSON instead
    of a table; commands that start long operations take --wait to follow them.

    \b
    Exit status:
      0  success
      1  the API refused the request, or a task waited for failed
         (ping: a host did not answer ok)
      2  usage error: bad options or arguments, or an unusable config file
      3  cannot reach the API, or not logged in (no token, or one the API
         no longer takes)
    """
    # The options are read from this context's params when a command needs the API.


for command in (auth.login, auth.logout, auth.whoami, org.group, user.group, zone.group, hypervisor.group,
                flavor.group, image.group, keypair.group, server_group.group, instance.group, volume.group,
                snapshot.group, network.group, subnet.group, port.group, router.group, sg.group, fip.group, task.group, event.group,
                audit.group, frontend.group, tree.tree, tree.ping, completion.completion):
    cli.add_command(command)
