"""Rate limits: token buckets (unit), then logins per address and per user name, and calls per token."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from frontend.api.app import create_app
from frontend.api.ratelimit import Limiter, RateLimits
from frontend.services import Frontend
from service.config import ConfigError, FrontendConfig, load
from tests.api.conftest import ADMIN_PASSWORD, Api, error_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The buckets ------------------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = Limiter(rate_per_s=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # one token comes every 0.5 s
    assert limiter.take("b") == 0.0  # keys do not share
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 100
    assert [limiter.take("a") for _ in range(4)][-1] > 0  # a long rest refills only up to the burst


def test_a_token_given_back_counts_again() -> None:
    limiter = Limiter(rate_per_s=1, burst=2, clock=Clock())
    for _ in range(10):
        assert limiter.take("a") == 0.0
        limiter.give_back("a")
    limiter.give_back("a")  # never above the burst
    assert [limiter.take("a") == 0.0 for _ in range(3)] == [True, True, False]


def test_idle_buckets_are_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    limiter = Limiter(rate_per_s=1, burst=5, max_keys=100, clock=clock)
    for i in range(50):
        limiter.take(f"old{i}")
    clock.now += 5  # every bucket full again: the same as none
    limiter.take("new")
    assert len(limiter) == 1
    for i in range(1000):
        limiter.take(f"flood{i}")
    assert len(limiter) == 100


def test_concurrent_takers_get_exactly_the_burst() -> None:
    limiter = Limiter(rate_per_s=1e-6, burst=100, clock=Clock())
    granted: list[bool] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(50):
            ok = limiter.take("shared") == 0.0
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100


def test_limits_are_checked_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "frontend.yaml"
    for bad in ("login_burst: 0", "token_rate_per_s: -5", "login_failures_per_min: 2000000"):
        path.write_text(f"api:\n  {bad}\n")
        with pytest.raises(ConfigError, match=f"api.{bad.split(':')[0]}: must be between 1 and 1000000"):
            load(FrontendConfig, path)


# Through the API ---------------------------------------------------------------------------------


def _tight(frontend: Frontend, **limits: Any) -> TestClient:
    """A client of an app on ``frontend`` with these limits (every client of it shares them)."""
    frontend.config = dataclasses.replace(frontend.config, api=dataclasses.replace(frontend.config.api, **limits))
    frontend.rate_limits = RateLimits.from_config(frontend.config.api)
    return TestClient(create_app(frontend))


def _login(client: TestClient, name: str, password: str) -> Any:
    return client.post("/v1/tokens", json={"username": name, "password": password})


def _refused(response: Any) -> bool:
    if response.status_code != 429:
        return False
    error = error_of(response)
    assert error["code"] == "rate_limited" and int(response.headers["Retry-After"]) >= 1, response.text
    return True


def test_logins_from_one_address_are_limited(frontend: Frontend) -> None:
    with _tight(frontend, login_rate_per_min=1, login_burst=4) as client:
        answers = [_login(client, "admin", ADMIN_PASSWORD) for _ in range(5)]
    assert [a.status_code for a in answers[:4]] == [201] * 4
    assert _refused(answers[4]) and "address" in error_of(answers[4])["reason"]
    assert int(answers[4].headers["Retry-After"]) == 60  # one login a minute


def test_failed_logins_lock_the_name_but_not_others(frontend: Frontend) -> None:
    with _tight(frontend, login_failures_per_min=1, login_failures_burst=2) as client:
        admin = Api(client).login("admin", ADMIN_PASSWORD)
        admin.ok("post", "/v1/users", 201, json={"name": "bob", "password": "bobs-password"})
        assert [_login(client, "bob", "guess").status_code for _ in range(2)] == [401, 401]
        refused = _login(client, "bob", "bobs-password")
        assert _refused(refused) and "user" in error_of(refused)["reason"]  # the right password waits too
        assert _login(client, "admin", ADMIN_PASSWORD).status_code == 201
        record = admin.ok("get", "/v1/audit", params={"status": 429})["items"][0]
    assert (record["route"], record["error"]) == ("/v1/tokens", "rate_limited")


def test_successful_logins_do_not_count_against_the_name(frontend: Frontend) -> None:
    with _tight(frontend, login_failures_burst=1) as client:
        assert [_login(client, "admin", ADMIN_PASSWORD).status_code for _ in range(5)] == [201] * 5
        assert _login(client, "admin", "wrong").status_code == 401
        assert _refused(_login(client, "admin", ADMIN_PASSWORD))


def test_calls_per_token_are_limited(frontend: Frontend) -> None:
    # A token every 1,000 s: at 1 a second, a slow PostgreSQL let the seventh call through.
    with _tight(frontend, token_rate_per_s=0.001, token_burst=5) as client:
        api = Api(client).login("admin", ADMIN_PASSWORD)
        other = Api(client).login("admin", ADMIN_PASSWORD)
        assert [api.get("/v1/whoami").status_code for _ in range(5)] == [200] * 5
        assert _refused(api.get("/v1/whoami"))
        assert _refused(api.post("/v1/flavors", json={"name": "x", "vcpus": 1, "memory_mb": 64, "disk_gb": 1}))
        assert other.get("/v1/whoami").status_code == 200  # another token has its own bucket
