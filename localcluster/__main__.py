"""``make run``: bring up a local cluster on the embedded defaults and keep it until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click

from . import LocalCluster


@click.command()
@click.option("--agents", default=2, show_default=True, help="Relay processes.")
@click.option("--backends", default=6, show_default=True, help="Backend processes (simulated hypervisors).")
@click.option("--workdir", default=".run", show_default=True, type=click.Path(file_okay=False),
              help="Where configs, logs and journals go.")
def main(agents: int, backends: int, workdir: str) -> None:
    """Start a frontend, AGENTS relays and BACKENDS backends on loopback."""
    cluster = LocalCluster(Path(workdir), agents=agents, backends=backends)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        click.echo(f"starting 1 frontend, {agents} agents and {backends} backends ...")
        cluster.start()
    except Exception as exc:
        cluster.stop()
        click.echo(f"could not start the cluster: {exc}", err=True)
        sys.exit(1)
    clctl = Path(sys.executable).parent / "clctl"
    click.echo(f"""
cloudland is up: frontend at {cluster.frontend_endpoint}, logs in {cluster.workdir / 'logs'}.
In another shell:

    export CLOUDLAND_CONTROL={cluster.control_socket}
    {os.path.relpath(clctl)} tree
    {os.path.relpath(clctl)} ping
    {os.path.relpath(clctl)} ping {cluster.backend_names[0]}

Ctrl-C stops everything.""")
    try:
        while not stop.wait(1.0):
            dead = [n for n, p in cluster.procs.items() if p.poll() is not None]
            if "frontend" in dead:
                click.echo("the frontend exited; stopping", err=True)
                break
    finally:
        cluster.stop()
        click.echo("stopped")


main()
