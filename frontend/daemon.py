"""cloudland-frontend: the REST API, the state, the task engine and the message tree's root."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import click
import structlog
import uvicorn
import zmq
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from sci import SecurityError, TreeRoot

from service.config import ConfigError, FrontendConfig, load
from service.logs import setup_logging

from .api.app import create_app
from .bootstrap import bootstrap, recover
from .control import ControlServer
from .db import Database, upgrade
from .db.models import Hypervisor
from .enrolment import root_security
from .hosts import HostMonitor
from .reconcile import Reconciler
from .retention import Retention
from .services import Frontend
from .tasks import Resumer
from .tlscert import api_pair

__all__ = ["main"]

log = structlog.get_logger("frontend")


def _resume_tasks(frontend: Frontend, root: TreeRoot, resumer: Resumer) -> None:
    """Resume unfinished tasks once the hosts that were up have found the restarted root.

    Commands re-sent before their hosts attach again would only wait out the root's reattach
    grace; waiting here first makes a restart after kill -9 finish its tasks cleanly.
    """
    settings = frontend.config.tree.settings
    with frontend.db.read() as session:
        expected = int(session.execute(select(func.count()).where(Hypervisor.status == "up")).scalar_one())
    try:
        root.wait_for_hosts(expected, timeout=settings.heartbeat_interval * settings.heartbeat_misses * 3 + 10)
    except TimeoutError as exc:
        log.warning("tasks_resume_partial_tree", reason=str(exc))
    count = frontend.tasks.resume()
    log.info("tasks_resume_started", tasks=count)
    resumer.start()


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
def main(config_path: str | None) -> None:
    """Run the frontend daemon."""
    try:
        config = load(FrontendConfig, config_path)
        setup_logging(config.log_level, service="frontend")
        Path(config.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        tls = api_pair(config, config_path or "defaults") if config.api.tls else None
        if tls is None:
            log.warning("api_tls_disabled", reason="api.tls is false: tokens and passwords cross the network in "
                                                   "clear unless a TLS proxy on this host is the only way in")
        db = Database(config.database_url)
        upgrade(db)
        bootstrap(db, Path(config.data_dir))
        recover(db, Path(config.data_dir))
        root = TreeRoot(config.tree.listen, config.tree.settings, node_id=config.node_id,
                        advertise=config.tree.advertise, security=root_security(config, db))
        root.start()
        control = ControlServer(root, config.control_socket)
        control.start()
    except (ConfigError, ValueError, OSError, zmq.ZMQError, SQLAlchemyError, SecurityError) as exc:
        click.echo(f"cloudland-frontend: {exc}", err=True)
        sys.exit(2)
    frontend = Frontend(config, db, root)
    hosts = HostMonitor(db, root, frontend.submit, frontend.host_networks)
    reconciler = Reconciler(db, frontend.submit, config.reconcile_interval_s)
    retention = Retention(db, config.audit_retention_days, config.event_retention_days)
    hosts.start()
    reconciler.start()
    retention.start()
    resumer = Resumer(frontend.tasks)
    threading.Thread(target=_resume_tasks, args=(frontend, root, resumer), name="resume", daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(create_app(frontend), host=config.api.host, port=config.api.port,
                                           log_config=None, access_log=False, server_header=False,
                                           ssl_certfile=tls.cert if tls else None,
                                           ssl_keyfile=tls.key if tls else None))
    log.info("frontend_ready", tree=root.endpoint, control=config.control_socket,
             api=f"{'https' if tls else 'http'}://{config.api.host}:{config.api.port}")
    try:
        server.run()  # until SIGTERM or SIGINT
    finally:
        resumer.stop()
        retention.stop()
        reconciler.stop()
        hosts.stop()
        if frontend.host_networks is not None:
            frontend.host_networks.close()
        frontend.tasks.stop()
        control.stop()
        root.stop()
        db.dispose()
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    main()
