"""A standby frontend serves the API: what needs no tree is done, tasks go to the leader, and
what acts through the tree is refused with ``not_leading`` so that clients ask another frontend."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from frontend.api.app import create_app
from frontend.bootstrap import bootstrap
from frontend.db import Database
from frontend.services import Frontend
from frontend.tasknotices import TaskListener, announce
from sci import TreeRoot, TreeSettings
from tests.api.conftest import ADMIN_PASSWORD, Api, error_of, make_frontend
from tests.support.waiting import until


@pytest.fixture
def standby(db_url: str, tmp_path: Path) -> Iterator[tuple[Frontend, list[str]]]:
    """A frontend as the daemon builds one before it is elected: a root not started, no generation,
    and the tasks its API creates handed over (here: recorded)."""
    root = TreeRoot("tcp://127.0.0.1:0", TreeSettings())
    frontend = make_frontend(db_url, tmp_path / "frontend", tree=root)
    bootstrap(frontend.db, frontend.data_dir, ADMIN_PASSWORD)
    handed: list[str] = []
    frontend.tasks.hand_over = handed.append
    yield frontend, handed
    frontend.tasks.stop()
    frontend.db.dispose()


def test_a_standby_takes_writes_and_hands_their_tasks_to_the_leader(standby: tuple[Frontend, list[str]]) -> None:
    frontend, handed = standby
    with TestClient(create_app(frontend)) as client:
        api = Api(client).login("admin", ADMIN_PASSWORD)
        network = api.ok("post", "/v1/networks", 201, json={"name": "net"})
        accepted = api.ok("post", "/v1/routers", 202, json={"name": "r", "network": network["id"]})
        assert handed == [accepted["task"]["id"]]
        assert api.ok("get", f"/v1/tasks/{accepted['task']['id']}")["status"] == "pending"
        assert frontend.tasks.in_flight == 0  # nothing runs here


def test_a_standby_refuses_what_acts_through_the_tree(standby: tuple[Frontend, list[str]]) -> None:
    frontend, _ = standby
    with TestClient(create_app(frontend)) as client:
        api = Api(client).login("admin", ADMIN_PASSWORD)
        for method, path, body in (("get", "/v1/tree", None), ("post", "/v1/tree/ping", {}),
                                   ("post", "/v1/hypervisors/hv1/revoke", None)):
            response = getattr(api, method)(path, json=body) if body is not None else getattr(api, method)(path)
            assert response.status_code == 503, (path, response.text)
            assert error_of(response)["code"] == "not_leading", path
        image = api.ok("post", "/v1/images", 201, json={"name": "img", "format": "qcow2"})
        upload = api.put(f"/v1/images/{image['id']}/file", content=b"QFI\xfb")
        assert upload.status_code == 503 and error_of(upload)["code"] == "not_leading"
        assert api.ok("get", "/v1/hypervisors")["items"] == []  # the table's states, no tree query
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["leader"] == {"leading": False, "generation": None}


def test_the_leader_hears_of_tasks_announced_and_catches_up_after_losing_its_connection(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("standby frontends need PostgreSQL")
    db = Database(db_url)
    heard: queue.Queue[str] = queue.Queue()
    catch_ups: list[int] = []
    listener = TaskListener(db, heard.put, lambda: catch_ups.append(1))
    listener.start()
    try:
        until(lambda: _listeners(db_url), 10, "the listener to listen")
        assert catch_ups == []  # the first connect needs none: the new leader resumes everything
        announce(db, "task-1")
        assert heard.get(timeout=5) == "task-1"
        with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
        until(lambda: catch_ups == [1], 10, "the listener to listen again and catch up")
        until(lambda: _listeners(db_url), 10, "the listener to listen again")
        announce(db, "task-2")
        assert heard.get(timeout=5) == "task-2"
    finally:
        listener.stop()
        db.dispose()


def _listeners(db_url: str) -> bool:
    with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
                                 "AND datname = current_database()").fetchone()[0])  # type: ignore[index]
