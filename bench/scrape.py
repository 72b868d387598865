"""What one scrape of the frontend's ``/metrics`` costs on a big tree.

A real frontend (SQLite state with one row per host, as the host monitor would have made
them) is put on the bench's running root, and its metrics are rendered as Prometheus would
ask for them: the database's gauges, one status query of the whole tree (every agent's
counters and every host's heartbeat age) and the text format.  The reference beside it is
the bare status query, the part of a scrape the tree itself costs.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sci
from frontend.bootstrap import admin_org_id, bootstrap
from frontend.db import Database, upgrade
from frontend.db.models import Hypervisor
from frontend.services import Frontend
from service.config import FrontendConfig

from .procs import cpu_seconds, run_pids

__all__ = ["Scrape", "measure_scrape"]

SCRAPES = 5


@dataclass(frozen=True)
class Scrape:
    seconds: list[float]
    status_seconds: list[float]
    cpu_s: float
    bytes: int
    series: int


def _state(data_dir: Path, hosts: list[str]) -> Database:
    db = Database(f"sqlite:///{data_dir / 'state.db'}")
    upgrade(db)
    bootstrap(db, data_dir, "bench-password-not-secret")
    org = admin_org_id(db)
    with db.transaction() as session:
        session.add_all(Hypervisor(name=h, org_id=org, status="up", vcpus=32, memory_mb=262144, disk_gb=2000)
                        for h in hosts)
    return db


def measure_scrape(root: sci.TreeRoot, hosts: list[str]) -> Scrape:
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        db = _state(Path(tmp), hosts)
        frontend = Frontend(FrontendConfig(data_dir=tmp), db, root)
        try:
            frontend.metrics.render()  # first use: SQLAlchemy compiles its statements
            status = []
            for _ in range(SCRAPES):
                started = time.monotonic()
                root.tree_status(timeout=5.0)
                status.append(time.monotonic() - started)
            pids = run_pids()
            before = cpu_seconds(pids)
            seconds = []
            for _ in range(SCRAPES):
                started = time.monotonic()
                text = frontend.metrics.render()
                seconds.append(time.monotonic() - started)
            after = cpu_seconds(pids)
        finally:
            frontend.tasks.stop()
            db.dispose()
    spent = sum(after[p] - before[p] for p in after if p in before)
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return Scrape(seconds, status, spent / SCRAPES, len(text), series)
