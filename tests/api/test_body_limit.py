"""The cap on request bodies: 413 before any route runs, declared or streamed; image uploads exempt."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from frontend.api.app import create_app
from frontend.api.bodylimit import BodyLimit
from frontend.services import Frontend
from service.config import ConfigError, FrontendConfig, load
from tests.api.conftest import ADMIN_PASSWORD, Api, error_of

LIMIT = 4096
FLAVOR = {"name": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}


@pytest.fixture
def admin(frontend: Frontend) -> Iterator[Api]:
    frontend.config = dataclasses.replace(frontend.config,
                                          api=dataclasses.replace(frontend.config.api, max_body_bytes=LIMIT))
    with TestClient(create_app(frontend)) as client:
        yield Api(client).login("admin", ADMIN_PASSWORD)


def _padded(size: int) -> bytes:
    """A flavor's JSON body of ``size`` bytes (an unknown field would be refused, but only once read)."""
    body = json.dumps({**FLAVOR, "pad": ""}).encode()
    return json.dumps({**FLAVOR, "pad": "x" * (size - len(body))}).encode()


def _chunks(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """The body without a Content-Length: httpx sends an iterator chunked."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


def test_a_declared_length_over_the_cap_is_refused_before_anything_else(admin: Api) -> None:
    response = admin.post("/v1/flavors", content=_padded(LIMIT + 1), headers={"Content-Type": "application/json"})
    error = error_of(response)
    assert response.status_code == 413 and error["code"] == "too_large" and str(LIMIT) in error["reason"]
    # Before authentication too: a stranger's big body costs no database lookup.
    response = admin.client.post("/v1/flavors", content=_padded(LIMIT * 10))
    assert response.status_code == 413
    assert admin.get("/v1/flavors").json()["items"] == []
    record = admin.ok("get", "/v1/audit", params={"limit": 1})["items"][0]
    assert (record["route"], record["status"], record["error"], record["user_name"]) == \
        ("/v1/flavors", 413, "too_large", None)


def test_a_streamed_body_over_the_cap_is_refused(admin: Api) -> None:
    response = admin.post("/v1/flavors", content=_chunks(_padded(LIMIT + 500)),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and error_of(response)["code"] == "too_large"


def test_bodies_up_to_the_cap_pass_whole(admin: Api) -> None:
    exact = _padded(LIMIT)
    assert len(exact) == LIMIT
    # Read whole and handed on: the route sees the body (and refuses its unknown field).
    for content in (exact, _chunks(exact)):
        response = admin.post("/v1/flavors", content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and error_of(response)["field"] == "pad"
    admin.ok("post", "/v1/flavors", 201, content=_chunks(json.dumps(FLAVOR).encode(), 7),
             headers={"Content-Type": "application/json"})


def test_image_uploads_stream_past_the_cap(admin: Api, frontend: Frontend) -> None:
    data = bytes(range(256)) * (LIMIT // 64)  # 4 times the cap
    for name, content in (("declared", data), ("chunked", _chunks(data, 3000))):
        image = admin.ok("post", "/v1/images", 201, json={"name": name, "format": "raw"})
        uploaded = admin.ok("put", f"/v1/images/{image['id']}/file", content=content)
        assert uploaded["status"] == "active" and uploaded["size_bytes"] == len(data)


def _through_limit(chunks: list[bytes], limit: int) -> tuple[list[bytes], int, list[Message]]:
    """Send ``chunks`` as separate messages through BodyLimit: what the app got, messages read, what was sent."""
    messages: list[Message] = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                               for i, c in enumerate(chunks)]
    read, got, sent = 0, [], []

    async def receive() -> Message:
        nonlocal read
        read += 1
        return messages[read - 1]

    async def send(message: Message) -> None:
        sent.append(message)

    async def app(_scope: Scope, app_receive: Receive, _send: Send) -> None:
        message = await app_receive()
        got.append(message["body"])
        assert not message["more_body"]

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/flavors", "headers": []}
    anyio.run(BodyLimit(app, limit, [("PUT", "/v1/images/{image}/file")]), scope, receive, send)
    return got, read, sent


def test_streamed_messages_are_joined_or_refused_as_soon_as_they_pass_the_cap() -> None:
    got, read, sent = _through_limit([b"a" * 10, b"b" * 10, b"c" * 10], limit=30)
    assert got == [b"a" * 10 + b"b" * 10 + b"c" * 10] and read == 3 and sent == []
    got, read, sent = _through_limit([b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 10], limit=15)
    assert got == [] and read == 2 and sent[0]["status"] == 413  # the rest is never read


def test_the_cap_is_checked_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "frontend.yaml"
    for bad in (100, 1 << 31):
        path.write_text(f"api:\n  max_body_bytes: {bad}\n")
        with pytest.raises(ConfigError, match="api.max_body_bytes: must be between 4096 and 1073741824"):
            load(FrontendConfig, path)
