"""Fixtures for API tests: a frontend on a fresh database (SQLite and PostgreSQL) and clients.

Every test that takes ``api`` runs twice, once per database.  PostgreSQL is a real server on
loopback, started once for the session; each test gets its own database, copied from a
migrated template so that a test costs milliseconds, not a migration.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from frontend import auth
from frontend.api.app import create_app
from frontend.bootstrap import bootstrap
from frontend.db import Database, upgrade
from frontend.services import Frontend
from service.config import FrontendConfig, SchedulerSection
from localcluster.pgserver import PostgresServer

ADMIN_PASSWORD = "admin-password-for-tests"
TEMPLATE = "cloudland_template"


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    """argon2's production cost (tens of ms, 64 MiB per hash) would dominate the API tests' time."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        yield


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        url = server.create_database(TEMPLATE)
        db = Database(url)
        upgrade(db)
        db.dispose()
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield server.create_database(name, template=TEMPLATE)
    server.drop_database(name)


def make_frontend(db_url: str, data_dir: Path, tree: Any = None, **scheduler: Any) -> Frontend:
    config = FrontendConfig(data_dir=str(data_dir), database=db_url, scheduler=SchedulerSection(**scheduler))
    db = Database(db_url)
    upgrade(db)
    return Frontend(config, db, tree)


class Api:
    """A client logged in as one user: ``api.post("/v1/...", json=...)`` and friends."""

    def __init__(self, client: TestClient, token: str | None = None, who: dict[str, Any] | None = None) -> None:
        self.client = client
        self.token = token
        self.who = who or {}
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __getattr__(self, method: str) -> Any:
        if method not in ("get", "post", "put", "patch", "delete"):
            raise AttributeError(method)
        return lambda path, **kw: getattr(self.client, method)(path, headers={**self.headers, **kw.pop("headers", {})},
                                                                **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        """Call and insist on ``status``; return the JSON body."""
        response = getattr(self, method)(path, **kw)
        assert response.status_code == status, f"{method.upper()} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def login(self, username: str, password: str) -> "Api":
        body = self.ok("post", "/v1/tokens", 201, json={"username": username, "password": password})
        return Api(self.client, body["token"], body)

    def tenant(self, name: str, role: str = "tenant-admin", **quotas: Any) -> "Api":
        """A new organization with one user of ``role``, logged in (call on the admin)."""
        org = self.ok("post", "/v1/orgs", 201, json={"name": name, "quotas": quotas})
        self.ok("post", "/v1/users", 201, json={"name": f"{name}-user", "password": "password-of-" + name,
                                                 "role": role, "org": org["id"]})
        return self.login(f"{name}-user", "password-of-" + name)


@pytest.fixture
def frontend(db_url: str, tmp_path: Path) -> Iterator[Frontend]:
    fe = make_frontend(db_url, tmp_path / "frontend")
    bootstrap(fe.db, fe.data_dir, ADMIN_PASSWORD)
    yield fe
    fe.tasks.stop()
    fe.db.dispose()


@pytest.fixture
def client(frontend: Frontend) -> Iterator[TestClient]:
    with TestClient(create_app(frontend)) as c:
        yield c


@pytest.fixture
def admin(client: TestClient) -> Api:
    return Api(client).login("admin", ADMIN_PASSWORD)


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])
