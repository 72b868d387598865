"""cloudland-agent: a relay of the tree."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
import structlog

from sci import Relay
from sci.proto import Role

from service.config import AgentConfig, ConfigError, load
from service.epochs import EpochFile
from service.logs import setup_logging
from service.nodekeys import EnrolmentError, node_security

__all__ = ["main"]

log = structlog.get_logger("agent")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
def main(config_path: str | None) -> None:
    """Run the agent (relay) daemon."""
    try:
        config = load(AgentConfig, config_path)
        setup_logging(config.log_level, service="agent")
        security = node_security(config.node_id, Role.AGENT, config.frontend, config.tree, config.key_path,
                                 config.enrolment_token_file)
        relay = Relay(config.node_id, config.frontend, config.tree.listen, config.tree.settings,
                      advertise=config.tree.advertise, security=security)
        epochs = EpochFile(Path(config.data_dir) / "root-epoch")
        relay.keep_epoch(epochs.load(), epochs.save)
    except (ConfigError, ValueError, OSError, EnrolmentError) as exc:
        click.echo(f"cloudland-agent: {exc}", err=True)
        sys.exit(2)
    signal.signal(signal.SIGTERM, lambda *_: relay.stop())
    signal.signal(signal.SIGINT, lambda *_: relay.stop())
    log.info("agent_starting", node=config.node_id, frontend=config.frontend)
    relay.run()


if __name__ == "__main__":
    main()
