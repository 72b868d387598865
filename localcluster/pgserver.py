"""A throwaway PostgreSQL server on loopback, started and stopped by the test suite or a local cloud.

Tests that need a database get a real server (not SQLite, not a mock) because the code
under test relies on PostgreSQL semantics: transactions, locking, types; a local cloud with
standby frontends (``make run FRONTENDS=3``) needs one to elect its leader.  Each server is a
fresh cluster in its own directory, so runs are isolated from each other and from any
cluster the distro package created; durability is switched off because nothing in it
has to survive the run.

    with PostgresServer() as pg:
        url = pg.create_database("inventory")   # postgresql+psycopg://postgres@127.0.0.1:PORT/inventory
        ...
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psutil
import psycopg
from psycopg import sql

SUPERUSER = "postgres"
# The server refuses to run as root, so as root everything runs as the distro's user.
RUN_AS = "postgres"


def find_bindir() -> Path:
    """The bin directory of the newest PostgreSQL installed the Debian way."""
    candidates = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    candidates = [d for d in candidates if (d / "postgres").is_file() and (d / "pg_ctl").is_file()]
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found under "
            "/usr/lib/postgresql/*/bin; install them with: apt-get install postgresql "
            "(or run tests/support/ensure_postgres.sh)")
    # Sort numerically: "9.6" < "15" as versions, not as strings.
    return max(candidates, key=lambda d: [int(x) for x in d.parent.name.split(".") if x.isdigit()])


def _free_port() -> int:
    # The port may be taken again before the server binds it; start() retries in that case.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1, in a fresh directory under `base_dir`.

    `base_dir` must be reachable by the `postgres` user when running as root: pytest's
    `tmp_path` is not (it lives under a mode-0700 /tmp/pytest-of-root), hence the default,
    the system temp dir. The server listens on a free port picked at start (`port`) and
    trusts every loopback connection, so URLs carry no password.
    """

    def __init__(self, base_dir: str | Path | None = None, *, start_timeout: float = 30.0) -> None:
        self.bindir = find_bindir()
        self.base_dir = Path(base_dir or tempfile.gettempdir())
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.port: int | None = None
        self.postmaster_pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def datadir(self) -> Path:
        assert self.dir is not None, "server not started"
        return self.dir / "data"

    @property
    def logfile(self) -> Path:
        assert self.dir is not None, "server not started"
        return self.dir / "postgres.log"

    def start(self) -> None:
        """initdb a fresh cluster and run it until it accepts connections."""
        if self.dir is not None:
            raise RuntimeError("server already started")
        _reap_orphans(self.base_dir)
        self.dir = Path(tempfile.mkdtemp(prefix="pgserver-", dir=self.base_dir))
        atexit.register(self.stop)
        try:
            self._init_cluster()
            for _attempt in range(3):
                if self._launch(_free_port()):
                    return
            raise RuntimeError(f"PostgreSQL did not start: no free port\n{self._log_tail()}")
        except BaseException:
            # __exit__ does not run when __enter__ fails: clean up the half-started server here.
            self.stop()
            raise

    def _init_cluster(self) -> None:
        assert self.dir is not None
        # Lets the next run recognise this directory as an orphan if we die without atexit.
        (self.dir / "owner.pid").write_text(f"{os.getpid()}\n")
        (self.dir / "sock").mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir, RUN_AS, RUN_AS)
            shutil.chown(self.dir / "sock", RUN_AS, RUN_AS)
            if subprocess.run(self._as_user(["test", "-w", str(self.dir)])).returncode != 0:
                raise RuntimeError(f"user {RUN_AS!r} cannot reach {self.dir}: choose a base_dir "
                                   "whose every parent is traversable by others (e.g. /tmp)")
        self._run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
                   "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n")

    def _launch(self, port: int) -> bool:
        """Start the postmaster on `port`; False if the port was taken meanwhile."""
        assert self.dir is not None
        argv = [str(self.bindir / "postgres"), "-D", str(self.datadir),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"port={port}",
                "-c", f"unix_socket_directories={self.dir / 'sock'}",
                # Durability off: the data dies with the test run anyway, and fsync dominates.
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200"]
        # A fresh log per attempt, so a failed bind is not blamed on the next attempt.
        with open(self.logfile, "wb") as log:
            # Our own child (not pg_ctl start) so an early exit is seen at once. Its own
            # session keeps a Ctrl-C meant for pytest from shutting it down under the
            # test; stop() still runs from pytest's teardown.
            self._proc = subprocess.Popen(self._as_user(argv), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.port = port
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                psycopg.connect(self._admin_dsn(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                pass
            if self._proc.poll() is not None:
                self._proc = None
                if "Address already in use" in self._log_tail():
                    return False
                raise RuntimeError(f"PostgreSQL exited during start-up\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not accept connections within "
                                   f"{self.start_timeout:.0f} s\n{self._log_tail()}")
            time.sleep(0.05)
        self.postmaster_pid = _postmaster_pid(self.datadir)
        return True

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (fast: clients are cut off), wait ``down_s``, and start it again on the
        same port with the same data: what a restart of PostgreSQL looks like to its clients."""
        assert self.dir is not None and self.port is not None, "server not started"
        subprocess.run(self._as_user([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir),
                                      "-m", "fast", "-w", "-t", "15"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if self._proc is not None:
            self._proc.wait(timeout=15)
        time.sleep(down_s)
        if not self._launch(self.port):
            raise RuntimeError(f"PostgreSQL did not start again on port {self.port}\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop the server, kill whatever is left of it, and remove its directory. Idempotent."""
        atexit.unregister(self.stop)
        if self.dir is None:
            return
        # Read again if unknown: a start that timed out may still have left a postmaster.
        self.postmaster_pid = self.postmaster_pid or _postmaster_pid(self.datadir)
        procs = _server_processes(self.postmaster_pid)
        if self._proc is not None and self._proc.poll() is None:
            # fast, not smart: open client connections must not delay the shutdown.
            subprocess.run(self._as_user([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir),
                                          "-m", "fast", "-w", "-t", "15"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Whatever pg_ctl could not stop, including children forked since the snapshot.
        procs += _server_processes(self.postmaster_pid)
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        if self._proc is not None:
            # The postmaster shares runuser's session (its children each make their own and
            # exit when it dies), so this also gets a postmaster whose pid was never read.
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = self._proc = self.postmaster_pid = self.port = None

    # -- databases -------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL of database `dbname` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` (a copy of `template`, if given) and return its SQLAlchemy URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self._admin(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` even while a leaked engine or session is still connected to it."""
        # WITH (FORCE) terminates the database's connections first (PostgreSQL 13+).
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # -- helpers ---------------------------------------------------------------------

    def _admin(self, statement: sql.Composed) -> None:
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            conn.execute(statement)

    def _admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"

    def _as_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, argv: list[str]) -> None:
        run = subprocess.run(self._as_user(argv), stdin=subprocess.DEVNULL,
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({run.returncode}):\n{run.stdout}{run.stderr}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "server log tail:\n" + "\n".join(text.splitlines()[-lines:])


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _server_processes(postmaster_pid: int | None) -> list[psutil.Process]:
    """The postmaster and its backends, checkpointer, etc., while they still exist."""
    if postmaster_pid is None:
        return []
    try:
        postmaster = psutil.Process(postmaster_pid)
        return [postmaster, *postmaster.children(recursive=True)]
    except psutil.Error:
        return []


def _reap_orphans(base_dir: Path) -> None:
    """Kill and remove servers left behind by test runs that died without running atexit.

    atexit does not run on SIGKILL or an unhandled SIGTERM; the next run cleans up instead.
    """
    for d in base_dir.glob("pgserver-*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(owner):
            continue
        procs = _server_processes(_postmaster_pid(d / "data"))
        try:
            # The pid may have been reused: only kill a postgres serving that directory.
            if procs and str(d / "data") in procs[0].cmdline():
                for p in procs:
                    p.kill()
                psutil.wait_procs(procs, timeout=10)
        except psutil.Error:
            pass
        shutil.rmtree(d, ignore_errors=True)
