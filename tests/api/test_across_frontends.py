"""What must hold across frontends on PostgreSQL: rate limits (every frontend takes from the same
buckets, one statement per take; SQLite's one frontend keeps them in memory) and revoked tokens
(kept in the database, read on every call)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from frontend.api import ratelimit
from frontend.api.app import create_app
from frontend.api.ratelimit import Limiter, RateLimits, SharedLimiter
from frontend.db.models import RateBucket
from frontend.services import Frontend
from tests.api.conftest import ADMIN_PASSWORD, make_frontend

postgres_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@postgres_only
def test_two_frontends_take_from_one_bucket(frontend: Frontend) -> None:
    a, b = (SharedLimiter(frontend.db, "calls_by_token", rate_per_s=1, burst=3) for _ in range(2))
    assert [a.take("t1"), b.take("t1"), a.take("t1")] == [0.0, 0.0, 0.0]
    wait = b.take("t1")
    assert 0.9 < wait <= 1.0  # a token a second
    assert a.take("t2") == 0.0  # another key, another bucket
    b.give_back("t1")
    assert a.take("t1") == 0.0 and b.take("t1") > 0


@postgres_only
def test_concurrent_takes_never_share_a_token(frontend: Frontend) -> None:
    limiters = [SharedLimiter(frontend.db, "calls_by_token", rate_per_s=1e-3, burst=50) for _ in range(4)]
    granted = []

    def hammer(limiter: SharedLimiter) -> None:
        granted.extend(1 for _ in range(30) if limiter.take("t") == 0.0)

    threads = [threading.Thread(target=hammer, args=(limiter,)) for limiter in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 50


@postgres_only
def test_full_buckets_are_deleted(frontend: Frontend) -> None:
    clock = [0.0]
    limiter = SharedLimiter(frontend.db, "logins_by_address", rate_per_s=100, burst=1, clock=lambda: clock[0])
    for address in ("10.0.0.1", "10.0.0.2"):
        limiter.take(address)
    time.sleep(0.05)  # both full again (a token every 10 ms)
    clock[0] = ratelimit.PRUNE_EVERY_S
    limiter.take("10.0.0.3")  # its bucket is not full: it stays
    with frontend.db.read() as session:
        assert session.execute(select(RateBucket.key)).scalars().all() == ["10.0.0.3"]


@pytest.fixture
def second(frontend: Frontend, tmp_path: Path) -> Iterator[Frontend]:
    """Another frontend on the same database."""
    other = make_frontend(str(frontend.db.url), tmp_path / "other")
    yield other
    other.tasks.stop()
    other.db.dispose()


@postgres_only
def test_a_limit_reached_through_one_frontend_holds_at_another(frontend: Frontend, second: Frontend) -> None:
    api = dataclasses.replace(frontend.config.api, login_rate_per_min=1, login_burst=2)
    for fe in (frontend, second):
        fe.config = dataclasses.replace(fe.config, api=api)
        fe.rate_limits = RateLimits.from_config(api, fe.db)
    with TestClient(create_app(frontend)) as one, TestClient(create_app(second)) as other:
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        assert [c.post("/v1/tokens", json=login).status_code for c in (one, other)] == [201, 201]
        refused = other.post("/v1/tokens", json=login)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"


@postgres_only
def test_a_token_revoked_at_one_frontend_is_refused_at_another(frontend: Frontend, second: Frontend) -> None:
    with TestClient(create_app(frontend)) as one, TestClient(create_app(second)) as other:
        token = one.post("/v1/tokens", json={"username": "admin", "password": ADMIN_PASSWORD}).json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert other.get("/v1/whoami", headers=bearer).status_code == 200
        assert one.delete("/v1/tokens/current", headers=bearer).status_code == 204
        refused = other.get("/v1/whoami", headers=bearer)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_sqlite_keeps_them_in_memory(frontend: Frontend) -> None:
    limits = RateLimits.from_config(frontend.config.api, frontend.db)
    kind = Limiter if frontend.db.is_sqlite else SharedLimiter
    assert all(isinstance(b, kind) for b in (limits.logins_by_address, limits.failed_logins_by_name,
                                             limits.calls_by_token))
    if frontend.db.is_sqlite:
        with pytest.raises(ValueError, match="need PostgreSQL"):
            SharedLimiter(frontend.db, "calls_by_token", 1, 1)


@postgres_only
def test_the_buckets_are_unlogged_on_postgresql(frontend: Frontend) -> None:
    with frontend.db.engine.connect() as conn:
        persistence = conn.execute(text("SELECT relpersistence FROM pg_class WHERE relname = 'rate_buckets'"))
        assert persistence.scalar() == "u"
        assert conn.execute(select(func.count()).select_from(RateBucket)).scalar() == 0
