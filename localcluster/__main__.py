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
              help="Where configs, logs, the database and journals go.")
@click.option("--api-port", default=8080, show_default=True, help="Where the REST API listens (127.0.0.1).")
def main(agents: int, backends: int, workdir: str, api_port: int) -> None:
    """Start a frontend, AGENTS relays and BACKENDS backends on loopback."""
    cluster = LocalCluster(Path(workdir), agents=agents, backends=backends, api_port=api_port)
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
    clctl = os.path.relpath(Path(sys.executable).parent / "clctl")
    password_file = os.path.relpath(cluster.workdir / "frontend" / "admin-password")
    click.echo(f"""
cloudland is up: API at {cluster.api_url} (docs at {cluster.api_url}/docs), tree at
{cluster.frontend_endpoint}, state and logs in {cluster.workdir}.  In another shell:

    {clctl} login --endpoint {cluster.api_url} --username admin --password-stdin < {password_file}
    {clctl} tree
    {clctl} ping
    {clctl} hypervisor list
    {clctl} flavor create small --vcpus 1 --memory-mb 512 --disk-gb 1

These hosts run no compute driver yet, so instances cannot be launched on them.
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
