"""cloudland-backend: one per hypervisor, the tree's leaf."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
import structlog

from sci import Journal, Leaf
from sci.proto import Role

from service.config import BackendConfig, ConfigError, load
from service.epochs import EpochFile
from service.logs import setup_logging
from service.nodekeys import EnrolmentError, node_security

from . import metrics
from .ops import system
from .registry import OpRegistry

__all__ = ["build", "main"]

log = structlog.get_logger("backend")


def build(config: BackendConfig) -> tuple[Leaf, OpRegistry]:
    registry = OpRegistry(workers=config.workers)
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    vtep = config.network.vtep if "backend.network" in config.ops_modules else ""
    system.register(registry, zone=config.zone, data_dir=config.data_dir, vtep=vtep, offered=config.capacity)
    for module in config.ops_modules:
        registry.load_module(module, config)
    try:
        # After the ops modules: a driver that cannot work stops the daemon before it takes a token.
        security = node_security(config.node_id, Role.BACKEND, config.frontend, config.tree, config.key_path,
                                 config.enrolment_token_file)
    except EnrolmentError:
        registry.close()
        raise
    journal = Journal(Path(config.data_dir) / "journal.log", fsync=config.journal_fsync)
    leaf = Leaf(config.node_id, config.frontend, config.tree.settings, registry, journal, groups=list(config.groups),
                security=security)
    registry.send_notices(leaf.notify)
    epochs = EpochFile(Path(config.data_dir) / "root-epoch")
    leaf.keep_epoch(epochs.load(), epochs.save)
    return leaf, registry


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
def main(config_path: str | None) -> None:
    """Run the backend daemon."""
    try:
        config = load(BackendConfig, config_path)
        setup_logging(config.log_level, service="backend")
        leaf, registry = build(config)
        if config.metrics_listen:
            metrics.serve(leaf.counters, config.metrics_listen)
    except (ConfigError, ValueError, ImportError, OSError, EnrolmentError) as exc:
        click.echo(f"cloudland-backend: {exc}", err=True)
        sys.exit(2)
    signal.signal(signal.SIGTERM, lambda *_: leaf.stop())
    signal.signal(signal.SIGINT, lambda *_: leaf.stop())
    log.info("backend_starting", node=config.node_id, frontend=config.frontend, ops=registry.names())
    try:
        leaf.run()
    finally:
        registry.close()
        leaf.journal.close()


if __name__ == "__main__":
    main()
