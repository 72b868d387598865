"""No secret reaches the logs: a realistic session with every log captured at debug level, then searched.

The frontend's structlog events are rendered as the daemon renders them (``service.logs``);
the standard library's loggers are captured at debug level too, and SQLAlchemy's statement log
is turned on (at info, as ``echo=True`` does: its debug level prints result rows, the data
itself), as an operator chasing a problem might.  Only the test's own HTTP client (httpx) is
left out: it is not the frontend, and it logs the URLs it calls.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from frontend.db import Database
from frontend.db.models import TaskStep
from service.logs import setup_logging
from tests.api.cloud import make_cloud
from tests.api.conftest import ADMIN_PASSWORD, Api

PASSWORD = "correct-horse-battery-7f3a"
NEW_PASSWORD = "another-horse-battery-2c9e"
WRONG_PASSWORD = "a-guess-that-is-wrong-9c1d"
USER_DATA = "#cloud-config\nchpasswd: {list: 'root:user-data-secret-42b1'}\n"
KEY_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIGq8oVb0k7nXh1k7JfF6QY3J2m4bGvT3Q0C3bX2m1Bz0"
PUBLIC_KEY = f"ssh-ed25519 {KEY_BLOB} key-comment-secret-55e2"
IMAGE_BYTES = b"image-content-secret-8d0e" * 64
CLIENT_LOGGERS = ("httpx", "httpcore")


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[io.StringIO, pytest.LogCaptureFixture]]:
    stream = io.StringIO()
    setup_logging("debug", service="frontend", stream=stream)
    # The daemon's set-up pins each logger to its first configuration; tests must be able to undo it.
    structlog.configure(cache_logger_on_first_use=False)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    try:
        yield stream, caplog
    finally:
        structlog.reset_defaults()


def _lines(stream: io.StringIO, caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return stream.getvalue().splitlines() + [
        line for record in caplog.records if not record.name.startswith(CLIENT_LOGGERS)
        for line in formatter.format(record).splitlines()]


def test_a_session_logs_no_secret(db_url: str, tmp_path: Path,
                                  captured: tuple[io.StringIO, pytest.LogCaptureFixture]) -> None:
    secrets = [ADMIN_PASSWORD, PASSWORD, NEW_PASSWORD, WRONG_PASSWORD, "user-data-secret-42b1", KEY_BLOB,
               "key-comment-secret-55e2", "image-content-secret-8d0e"]
    cloud_run = make_cloud(db_url, tmp_path / "frontend", hosts=1)
    cloud = next(cloud_run)
    try:
        admin = cloud.admin
        secrets.append(admin.token or "")
        admin.ok("post", "/v1/flavors", 201, json={"name": "small", "vcpus": 1, "memory_mb": 256, "disk_gb": 1})
        org = admin.ok("post", "/v1/orgs", 201, json={"name": "acme"})
        admin.ok("post", "/v1/users", 201, json={"name": "alice", "password": PASSWORD, "role": "tenant-admin",
                                                  "org": org["id"]})
        alice = admin.login("alice", PASSWORD)
        secrets.append(alice.token or "")
        alice.ok("post", "/v1/keypairs", 201, json={"name": "laptop", "public_key": PUBLIC_KEY})
        image = alice.ok("post", "/v1/images", 201, json={"name": "disk", "format": "raw"})
        alice.ok("put", f"/v1/images/{image['id']}/file", content=IMAGE_BYTES)
        alice.ok("post", "/v1/networks", 201, json={"name": "net"})
        alice.ok("post", "/v1/subnets", 201, json={"name": "sub", "network": "net", "cidr": "10.0.0.0/24"})
        accepted = alice.ok("post", "/v1/instances", 202, json={
            "name": "web", "flavor": "small", "image": "disk", "keypair": "laptop", "user_data": USER_DATA,
            "nics": [{"network": "net"}]})
        assert cloud.wait_task(alice, accepted["task"]["id"])["status"] == "succeeded"

        # The hypervisor's signed link, as the launch sent it; then used, and forged.
        with cloud.frontend.db.read() as session:
            bodies = session.execute(select(TaskStep.body).where(TaskStep.op.is_not(None))).scalars().all()
        link = next(b["instance"]["image"]["url"] for b in bodies if "instance" in b)
        signature = parse_qs(urlsplit(link).query)["signature"][0]
        secrets.append(signature)
        local = urlsplit(link)._replace(scheme="", netloc="").geturl()
        assert cloud.client.get(local).content == IMAGE_BYTES
        assert cloud.client.get(local.replace(signature, "0" * 64)).status_code == 401

        # Refusals whose bodies hold secrets: a wrong password, a bad new one, a mistyped field.
        assert Api(cloud.client).post("/v1/tokens", json={"username": "alice", "password": WRONG_PASSWORD}) \
            .status_code == 401
        assert Api(cloud.client).post("/v1/tokens", json={"username": PASSWORD, "password": PASSWORD}) \
            .status_code == 401
        assert alice.patch(f"/v1/users/{alice.who['user_id']}", json={"password": "short"}).status_code == 422
        assert alice.post("/v1/keypairs", json={"name": "bad", "public_key": f"ssh-rsa {KEY_BLOB}"}).status_code == 422
        alice.ok("patch", f"/v1/users/{alice.who['user_id']}", json={"password": NEW_PASSWORD})
        alice = admin.login("alice", NEW_PASSWORD)
        secrets.append(alice.token or "")
        alice.ok("delete", "/v1/tokens/current", 204)
        assert alice.get("/v1/whoami").status_code == 401
        admin.ok("get", "/v1/audit")
    finally:
        next(cloud_run, None)  # stops the cloud, its tasks and its hosts

    lines = _lines(*captured)
    events = " ".join(lines)
    # The capture saw the session: the API's refusals, the task and the hosts' commands, SQL statements.
    for expected in ("api_refused", "task_finished", "command_done", "INSERT INTO instances"):
        assert expected in events, f"nothing logged {expected!r}: the capture missed part of the session"
    for secret in secrets:
        assert secret
        leaks = [line for line in lines if secret in line]
        assert not leaks, f"{secret!r} was logged: {leaks[:3]}"


def test_database_errors_do_not_quote_their_values(db_url: str) -> None:
    db = Database(db_url)
    try:
        with pytest.raises(SQLAlchemyError) as failed, db.transaction() as session:
            session.execute(text("INSERT INTO no_such_table (x) VALUES (:secret)"), {"secret": "user-data-secret-42b1"})
        assert "user-data-secret-42b1" not in str(failed.value)
    finally:
        db.dispose()
