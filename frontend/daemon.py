"""cloudland-frontend: the REST API, the state, the task engine and the message tree's root.

On SQLite one frontend runs and leads.  On PostgreSQL any number may run (``election.py``):
each serves the API from its start, and the one that leads also runs the root and the tasks;
a standby hands the tasks its API creates to the leader (``tasknotices.py``).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from pathlib import Path

import click
import structlog
import uvicorn
import zmq
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from sci import SecurityError, TreeRoot

from service.config import ConfigError, FrontendConfig, load
from service.logs import setup_logging

from .api.app import create_app
from .bootstrap import bootstrap, recover
from .db import Database, upgrade
from .election import Election
from .enrolment import root_security
from .leader import LeaderDuties
from .leadership import SingleFrontendLock
from .services import Frontend
from .tasknotices import announce
from .tlscert import api_pair

__all__ = ["main"]

log = structlog.get_logger("frontend")


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
        single = SingleFrontendLock(Path(str(make_url(db.url).database))) if db.is_sqlite else None
        if single is not None:
            single.acquire()
        upgrade(db)
        bootstrap(db, Path(config.data_dir))
        root = TreeRoot(config.tree.listen, config.tree.settings, node_id=config.node_id,
                        advertise=config.tree.advertise, security=root_security(config, db))
        frontend = Frontend(config, db, root)
        duties = LeaderDuties(config, db, root, frontend.tasks, frontend.submit, frontend.consoles)
        if single is not None:
            recover(db, Path(config.data_dir))
            duties.start(0)
            frontend.generation = 0
            frontend.metrics.leader.set(1)
            single.announce(db, config.node_id, config.api.url)
    except (ConfigError, ValueError, OSError, zmq.ZMQError, SQLAlchemyError, SecurityError) as exc:
        click.echo(f"cloudland-frontend: {exc}", err=True)
        sys.exit(2)
    server = uvicorn.Server(uvicorn.Config(create_app(frontend), host=config.api.host, port=config.api.port,
                                           log_config=None, access_log=False, server_header=False,
                                           # calls in flight get this long; idle keep-alive clients do not
                                           # hold a stop (or a rolling restart) back
                                           timeout_graceful_shutdown=5,
                                           ssl_certfile=tls.cert if tls else None,
                                           ssl_keyfile=tls.key if tls else None))

    def stop_serving() -> None:
        server.should_exit = True

    # uvicorn raises the SIGTERM or SIGINT it stopped on again once it returns, with the handler
    # that was there before it ran: this one, so that the lease is handed over and the duties
    # stopped below (the default would end the process first, and a successor would wait the
    # whole lease out).
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: stop_serving())

    election = Election(frontend, duties, stop_serving) if single is None else None
    if election is not None:
        frontend.tasks.hand_over = functools.partial(announce, db)

        def stand_by() -> None:
            if not election.wait_elected():
                stop_serving()  # elected, but could not take up the duties: ``ended`` says why

        threading.Thread(target=stand_by, name="election", daemon=True).start()
    log.info("frontend_ready", tree=root.endpoint, control=config.control_socket,
             api=f"{'https' if tls else 'http'}://{config.api.host}:{config.api.port}")
    try:
        server.run()  # until SIGTERM or SIGINT
    finally:
        if election is not None:
            election.stop()
        duties.stop()
        if single is not None:
            single.release()
        db.dispose()
    code = 0
    if election is not None and election.ended is not None:
        click.echo(f"cloudland-frontend: {election.ended}", err=True)
        code = 1
    elif not server.started:
        code = 1
    log.info("frontend_stopped", status=code)
    # Tasks cut short by the stop are in the database for the next leader; their threads must
    # not keep the process (the interpreter would wait for every one of them at exit).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
