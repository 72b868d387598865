"""Standby frontends on one PostgreSQL database, as real processes: the lease elects one, a
standby takes over when the leader dies or stalls past its lease, and a stalled leader that
wakes up has stepped down."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from frontend.db import Database
from frontend.db.models import Event
from frontend.leadership import LEASE_S, RENEW_S
from localcluster import free_port
from localcluster.pgserver import PostgresServer
from tests.support.tcpproxy import TcpProxy
from tests.support.waiting import until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Frontend:
    name: str
    api: str
    log: Path
    proc: subprocess.Popen[bytes]

    def ready(self) -> dict[str, Any] | None:
        try:
            return dict(httpx.get(f"{self.api}/readyz", timeout=1.0).json())
        except httpx.TransportError:
            return None

    def leading(self) -> dict[str, Any] | None:
        """/readyz, once this frontend leads (a standby answers it too, as not ready)."""
        ready = self.ready()
        return ready if ready is not None and ready["leader"]["leading"] else None

    def log_text(self) -> str:
        return self.log.read_text()


class Frontends:
    def __init__(self, workdir: Path, database: str) -> None:
        self.workdir = workdir
        self.database = database
        self.running: dict[str, Frontend] = {}

    def start(self, name: str, database: str | None = None) -> Frontend:
        """Frontend ``name``, on the group's database or (``database``) its own way to it."""
        port = free_port()
        config = {"node_id": name, "data_dir": str(self.workdir / name), "database": database or self.database,
                  "control_socket": str(self.workdir / f"{name}.sock"), "log_level": "info",
                  "api": {"host": "127.0.0.1", "port": port, "tls": False},
                  "tree": {"listen": f"tcp://127.0.0.1:{free_port()}"}}
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen([sys.executable, "-m", "frontend", "--config", str(path)], cwd=REPO,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
        frontend = Frontend(name, f"http://127.0.0.1:{port}", log, proc)
        self.running[name] = frontend
        return frontend

    def stop(self) -> None:
        for frontend in self.running.values():
            if frontend.proc.poll() is None:
                os.killpg(frontend.proc.pid, signal.SIGCONT)
                frontend.proc.terminate()
        for frontend in self.running.values():
            try:
                frontend.proc.wait(15)
            except subprocess.TimeoutExpired:
                frontend.proc.kill()
                frontend.proc.wait(5)


@pytest.fixture
def frontends(tmp_path: Path) -> Iterator[Frontends]:
    with PostgresServer() as pg:
        group = Frontends(tmp_path, pg.create_database("cloudland"))
        try:
            yield group
        finally:
            group.stop()


def _leader_events(database: str) -> list[str]:
    db = Database(database)
    try:
        with db.read() as session:
            return [e.message for e in session.query(Event).filter(Event.kind == "frontend.leader")
                    .order_by(Event.created_at)]
    finally:
        db.dispose()


def test_a_standby_takes_over_within_seconds_of_the_leader_being_killed(frontends: Frontends) -> None:
    a = frontends.start("fa")
    first = until(a.leading, 60, "fa to lead")
    assert first["leader"] == {"leading": True, "generation": 1}
    b = frontends.start("fb")
    until(lambda: "frontend_standby" in b.log_text(), 60, "fb to wait as a standby")
    time.sleep(2 * RENEW_S)
    standby = b.ready()  # a standby serves the API, and says it does not lead
    assert standby is not None and standby["leader"] == {"leading": False, "generation": None}

    os.killpg(a.proc.pid, signal.SIGKILL)
    killed, killed_at = time.monotonic(), time.time()
    taken = until(b.leading, 30, "fb to take over", every=0.05)
    took = time.monotonic() - killed
    assert taken["leader"] == {"leading": True, "generation": 2}
    assert taken["checks"] == {"database": "ok", "tree": "ok"}
    assert took < LEASE_S + RENEW_S + 3.0, f"takeover took {took:.1f}s"
    # fa's session ended with it: fb took the lease before it could have run out (at least
    # LEASE_S - RENEW_S after the kill), by the dead-holder rule.
    lease_taken = _logged_at(b.log_text(), "leadership_taken") - killed_at
    assert lease_taken < LEASE_S - RENEW_S, f"fb waited out the dead fa's lease ({lease_taken:.1f}s)"
    assert httpx.get(f"{b.api}/healthz").json() == {"status": "ok"}
    events = _leader_events(frontends.database)
    assert [m.split("@")[0] for m in events] == ["fa", "fb"]
    assert events[-1].endswith("generation 2")


def test_a_leader_stalled_past_its_lease_has_stepped_down_when_it_wakes(frontends: Frontends) -> None:
    a = frontends.start("fa")
    until(a.leading, 60, "fa to lead")
    b = frontends.start("fb")
    until(lambda: "frontend_standby" in b.log_text(), 60, "fb to wait as a standby")

    os.killpg(a.proc.pid, signal.SIGSTOP)
    taken = until(b.leading, 30, "fb to take over from the stalled fa", every=0.05)
    assert taken["leader"]["generation"] == 2
    os.killpg(a.proc.pid, signal.SIGCONT)
    assert a.proc.wait(20) == 1, "a frontend that lost its lease exits for its supervisor to restart"
    text = a.log_text()
    assert "leadership_lost" in text and "leader_duties_stopped" in text
    assert "lost the lease of generation 1" in text
    assert b.leading() is not None and b.proc.poll() is None


def _logged_at(text: str, event: str) -> float:
    """The Unix time of the first ``event`` in a frontend's JSON log."""
    line = next(json.loads(line) for line in text.splitlines() if f'"event": "{event}"' in line)
    return dt.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def test_a_leader_cut_off_from_the_database_steps_down_within_its_lease_and_rejoins_as_a_standby(
        tmp_path: Path) -> None:
    """A partition between the leader and PostgreSQL alone: the link black-holed, nothing closed."""
    with PostgresServer() as pg, TcpProxy("127.0.0.1", pg.port or 0) as proxy:
        direct = pg.create_database("cloudland")
        group = Frontends(tmp_path, direct)
        try:
            a = group.start("fa", database=direct.replace(f":{pg.port}/", f":{proxy.port}/"))
            until(a.leading, 60, "fa to lead")
            b = group.start("fb")
            until(lambda: "frontend_standby" in b.log_text(), 60, "fb to wait as a standby")
            time.sleep(2 * RENEW_S)

            cut = time.time()
            proxy.cut()
            taken = until(b.leading, 30, "fb to take over from the cut-off fa", every=0.05)
            assert taken["leader"]["generation"] == 2
            # Before its lease ran out, by the lease's own rule (the database's clock may not be asked).
            stepped_down = _logged_at(a.log_text(), "leadership_lost") - cut
            assert stepped_down < LEASE_S, f"fa led on {stepped_down:.1f}s after it was cut off"
            assert _logged_at(b.log_text(), "leader_duties_started") > cut + stepped_down
            # Still cut off, it exits for its supervisor, instead of hanging on the dead link.
            assert a.proc.wait(LEASE_S * 4) == 1
            assert "lost the lease of generation 1" in a.log_text()

            proxy.restore()
            a = group.start("fa", database=direct.replace(f":{pg.port}/", f":{proxy.port}/"))  # its supervisor
            until(lambda: a.log_text().count('"frontend_standby"') == 2, 60, "fa back as a standby")
            time.sleep(2 * RENEW_S)
            assert (a.ready() or {}).get("leader") == {"leading": False, "generation": None}
            assert b.leading() is not None and b.proc.poll() is None
        finally:
            group.stop()


def test_a_second_frontend_on_sqlite_is_refused(tmp_path: Path) -> None:
    group = Frontends(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    try:
        a = group.start("fa")
        until(a.ready, 60, "fa to serve")
        b = group.start("fb")
        assert b.proc.wait(60) == 2
        assert "another frontend" in b.log_text() and "several frontends need PostgreSQL" in b.log_text()
        assert a.ready() is not None
    finally:
        group.stop()
