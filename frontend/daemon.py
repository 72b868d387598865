"""cloudland-frontend: the tree's root and the local control socket."""

from __future__ import annotations

import signal
import sys
import threading

import click
import structlog
import zmq

from sci import TreeRoot

from service.config import ConfigError, FrontendConfig, load
from service.logs import setup_logging

from .control import ControlServer

__all__ = ["main"]

log = structlog.get_logger("frontend")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
def main(config_path: str | None) -> None:
    """Run the frontend daemon."""
    try:
        config = load(FrontendConfig, config_path)
        setup_logging(config.log_level, service="frontend")
        root = TreeRoot(config.tree.listen, config.tree.settings, node_id=config.node_id,
                        advertise=config.tree.advertise)
        root.start()
        control = ControlServer(root, config.control_socket)
        control.start()
    except (ConfigError, ValueError, OSError, zmq.ZMQError) as exc:
        click.echo(f"cloudland-frontend: {exc}", err=True)
        sys.exit(2)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info("frontend_ready", tree=root.endpoint, control=config.control_socket)
    stopping.wait()
    control.stop()
    root.stop()


if __name__ == "__main__":
    main()
