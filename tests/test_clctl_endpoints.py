"""clctl against a cloud of several frontends: which endpoint a call goes to, when it moves on to
the next one, and when it must not (a call that reached a serving frontend is never sent twice)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Callable

import httpx
import pytest
import yaml

import clctl.client
from tests.test_clctl import config_path, home, invoke  # noqa: F401  (home: a fresh HOME for every test)

LIVE = "http://live.test:8080"
STANDBY = "http://standby.test:8080"


def closed_port_endpoint() -> str:
    """An endpoint nobody listens on: a port bound, then let go."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


Answer = Callable[[httpx.Request], httpx.Response]


def whoami(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"user_id": "u1", "user_name": "admin", "org_id": "o1", "role": "admin"})


def not_leading(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": {"code": "not_leading", "message": "this frontend is a standby",
                                               "field": None, "reason": "this frontend is a standby"}})


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Answer], list[tuple[str, str]]]:
    """``answers[endpoint]`` answers that endpoint's requests (real sockets for the others);
    returns it and the (endpoint, method path) of every request that reached a scripted one."""
    monkeypatch.setenv("CLOUDLAND_TOKEN", "t0k")
    answers: dict[str, Answer] = {}
    reached: list[tuple[str, str]] = []

    def connect(endpoint: str, timeout: httpx.Timeout, ca_file: str | None) -> httpx.Client:
        if endpoint not in answers:
            return httpx.Client(base_url=endpoint, timeout=timeout)

        def answer(request: httpx.Request) -> httpx.Response:
            reached.append((endpoint, f"{request.method} {request.url.path}"))
            return answers[endpoint](request)

        return httpx.Client(base_url=endpoint, transport=httpx.MockTransport(answer))

    monkeypatch.setattr(clctl.client, "http_client", connect)
    return answers, reached


def test_a_dead_endpoint_then_a_live_one(cloud: tuple[dict[str, Answer], list[tuple[str, str]]],
                                         home: Path) -> None:
    answers, reached = cloud
    answers[LIVE] = whoami
    dead = closed_port_endpoint()
    result = invoke("--endpoint", dead, "--endpoint", LIVE, "whoami")
    assert result.exit_code == 0, result.output
    assert f"endpoint   {LIVE}" in result.stdout  # the one that answered
    assert reached == [(LIVE, "GET /v1/whoami")]
    # Remembered: the next call starts with the endpoint that answered (the dead one is not tried first).
    assert (home / ".config" / "cloudland" / "clctl.last-endpoint").read_text().strip() == LIVE
    answers[dead] = lambda request: pytest.fail("the dead endpoint was tried before the one that answered last")
    assert invoke("--endpoint", dead, "--endpoint", LIVE, "whoami").exit_code == 0


def test_every_endpoint_dead_names_each_one() -> None:
    dead = [closed_port_endpoint(), closed_port_endpoint(), closed_port_endpoint()]
    result = invoke("--endpoint", f"{dead[0]},{dead[1]}", "--endpoint", dead[2], "--token", "t", "flavor", "list")
    assert result.exit_code == 3, result.output
    assert "cannot reach the API at any of its 3 endpoints" in result.stderr
    for endpoint in dead:
        assert f"{endpoint}: " in result.stderr
    assert "Traceback" not in result.output


def test_a_standby_passes_the_call_on(cloud: tuple[dict[str, Answer], list[tuple[str, str]]]) -> None:
    answers, reached = cloud
    answers.update({STANDBY: not_leading, LIVE: lambda r: httpx.Response(201, json={"id": "f1", "name": "small"})})
    result = invoke("--json", "flavor", "create", "small", "--vcpus", "1", "--memory-mb", "512", "--disk-gb", "1",
                    env={"CLOUDLAND_ENDPOINT": f"{STANDBY},{LIVE}"})
    assert result.exit_code == 0, result.output
    assert [endpoint for endpoint, _call in reached] == [STANDBY, LIVE]
    # A standby only: the error says what each endpoint is.
    answers[LIVE] = not_leading
    result = invoke("--endpoint", STANDBY, "--endpoint", LIVE, "flavor", "list")
    assert result.exit_code == 3
    assert f"{STANDBY}: a standby frontend: it does not lead" in result.stderr


@pytest.mark.parametrize("first", [
    lambda r: httpx.Response(503, json={"error": {"code": "unavailable", "message": "no tree", "field": None,
                                                  "reason": "no tree"}}),
    lambda r: httpx.Response(500, json={"error": {"code": "internal", "message": "boom", "field": None,
                                                  "reason": "boom"}}),
], ids=["unavailable", "internal"])
def test_a_call_a_frontend_answered_is_not_sent_again(cloud: tuple[dict[str, Answer], list[tuple[str, str]]],
                                                      first: Answer) -> None:
    answers, reached = cloud
    answers.update({STANDBY: first, LIVE: lambda r: pytest.fail("a call was sent twice")})
    result = invoke("--endpoint", STANDBY, "--endpoint", LIVE, "flavor", "create", "small", "--vcpus", "1",
                    "--memory-mb", "512", "--disk-gb", "1")
    assert result.exit_code == 1, result.output
    assert reached == [(STANDBY, "POST /v1/flavors")]


CUT_OFF = [
    lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("read timed out", request=r)),
    lambda r: (_ for _ in ()).throw(httpx.RemoteProtocolError("server disconnected", request=r)),
]


@pytest.mark.parametrize("first", CUT_OFF, ids=["read-timeout", "disconnected"])
def test_a_change_cut_off_goes_to_the_next_endpoint_with_its_key(
        cloud: tuple[dict[str, Answer], list[tuple[str, str]]], first: Answer) -> None:
    """Its frontend killed mid-call: the same key on both sends, so the API does it once."""
    answers, reached = cloud
    keys: list[str] = []

    def keep_key(answer: Answer) -> Answer:
        return lambda r: (keys.append(r.headers["Idempotency-Key"]), answer(r))[1]

    answers.update({STANDBY: keep_key(first),
                    LIVE: keep_key(lambda r: httpx.Response(201, json={"id": "f1", "name": "small"}))})
    result = invoke("--endpoint", STANDBY, "--endpoint", LIVE, "flavor", "create", "small", "--vcpus", "1",
                    "--memory-mb", "512", "--disk-gb", "1")
    assert result.exit_code == 0, result.output
    assert reached == [(STANDBY, "POST /v1/flavors"), (LIVE, "POST /v1/flavors")]
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 36
    # The next call is another change: another key.
    invoke("--endpoint", LIVE, "flavor", "create", "medium", "--vcpus", "1", "--memory-mb", "512", "--disk-gb", "1")
    assert len(keys) == 3 and keys[2] != keys[0]


@pytest.mark.parametrize("first", CUT_OFF, ids=["read-timeout", "disconnected"])
def test_a_read_cut_off_is_read_again_from_the_next_endpoint(
        cloud: tuple[dict[str, Answer], list[tuple[str, str]]], first: Answer) -> None:
    answers, reached = cloud
    keyed: list[bool] = []

    def listed(request: httpx.Request) -> httpx.Response:
        keyed.append("Idempotency-Key" in request.headers)
        return httpx.Response(200, json={"items": [], "next": None})

    answers.update({STANDBY: first, LIVE: listed})
    result = invoke("--endpoint", STANDBY, "--endpoint", LIVE, "flavor", "list")
    assert result.exit_code == 0, result.output
    assert reached == [(STANDBY, "GET /v1/flavors"), (LIVE, "GET /v1/flavors")]
    assert keyed == [False]  # a read needs none


def test_login_saves_every_endpoint_and_the_file_may_list_them(
        cloud: tuple[dict[str, Answer], list[tuple[str, str]]], home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers, reached = cloud
    monkeypatch.delenv("CLOUDLAND_TOKEN")
    answers.update({STANDBY: not_leading, LIVE: lambda r: httpx.Response(201, json={
        "token": "fresh", "expires_at": "2026-12-06T00:00:00Z", "user_id": "u1", "org_id": "o1", "role": "admin"})})
    result = invoke("login", "--endpoint", STANDBY, "--endpoint", LIVE, "-u", "admin", "--password-stdin",
                    input="pw\n")
    assert result.exit_code == 0, result.output
    assert f"logged in to {LIVE}" in result.stdout
    saved = yaml.safe_load(config_path(home).read_text())
    assert saved == {"endpoints": [STANDBY, LIVE], "token": "fresh"}
    answers[LIVE] = whoami
    reached.clear()
    result = invoke("--json", "whoami")  # the saved list, the last to answer first
    assert result.exit_code == 0 and json.loads(result.stdout)["user_name"] == "admin"
    assert reached == [(LIVE, "GET /v1/whoami")]
    config_path(home).write_text("endpoints: https://a.test\ntoken: x\n")
    result = invoke("whoami")
    assert result.exit_code == 2 and "endpoints must be a list of URLs" in result.stderr
