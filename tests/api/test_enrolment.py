"""Enrolment and revocation end to end in one process: the API issues tokens, a real CURVE tree
root takes them through the frontend's enroller, and real leaves attach (or are refused).

Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from structlog.testing import capture_logs

from backend.ops import system
from backend.registry import OpRegistry
from frontend.api.app import create_app
from frontend.bootstrap import admin_org_id, bootstrap
from frontend.db import Database, upgrade
from frontend.db.models import Enrolment, Hypervisor, IdempotencyKey, NodeKey, utcnow
from frontend.enrolment import load_keyring, root_security
from frontend.services import Frontend
from sci import Journal, KeyPair, Leaf, Security, SecurityError, TreeRoot, TreeSettings
from sci.enrolment import enrol
from sci.proto import Role
from service.config import FrontendConfig
from service.nodekeys import EnrolmentToken
from tests.api.cloud import make_cloud
from tests.api.conftest import ADMIN_PASSWORD, Api, error_of
from tests.support.waiting import until

SETTINGS = TreeSettings(heartbeat_interval=0.2, reattach_grace=1.0)


@dataclass
class SecureCloud:
    root: TreeRoot
    frontend: Frontend
    admin: Api
    leaves: list[tuple[Leaf, threading.Thread]] = field(default_factory=list)

    def token(self, name: str, role: str = "backend", **body: Any) -> str:
        issued = self.admin.ok("post", "/v1/hypervisors/enrolments", 201, json={"name": name, "role": role, **body})
        return str(issued["token"])

    def enrol(self, name: str, token: str, role: Role = Role.BACKEND, keys: KeyPair | None = None) -> Security:
        """What a new node does at its first start; raises SecurityError with the root's reason."""
        security = Security(keys or KeyPair.generate(), EnrolmentToken.parse(token).root_key)
        enrol(self.root.endpoint, name, role, token, security)
        return security

    def leaf(self, name: str, security: Security) -> Leaf:
        registry = OpRegistry(2)
        system.register(registry)
        leaf = Leaf(name, self.root.endpoint, SETTINGS, registry, Journal(None), security=security)
        thread = threading.Thread(target=leaf.run, daemon=True)
        thread.start()
        self.leaves.append((leaf, thread))
        return leaf

    def up(self) -> set[str]:
        return {n.node_id for n in self.root.nodes() if n.up}


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[SecureCloud]:
    config = FrontendConfig(data_dir=str(tmp_path / "frontend"), database=db_url)
    db = Database(db_url)
    upgrade(db)
    bootstrap(db, Path(config.data_dir), ADMIN_PASSWORD)
    root = TreeRoot("tcp://127.0.0.1:0", SETTINGS, security=root_security(config, db)).start()
    frontend = Frontend(config, db, root)
    client = TestClient(create_app(frontend))
    cloud = SecureCloud(root, frontend, Api(client).login("admin", ADMIN_PASSWORD))
    try:
        yield cloud
    finally:
        for leaf, thread in cloud.leaves:
            leaf.stop()
            thread.join(5)
        root.stop()
        frontend.tasks.stop()
        client.close()
        db.dispose()


def secret_of(token: str) -> str:
    return EnrolmentToken.parse(token).secret


def test_a_token_enrols_its_node_which_then_joins(cloud: SecureCloud) -> None:
    with capture_logs() as logs:
        issued = cloud.admin.ok("post", "/v1/hypervisors/enrolments", 201, json={"name": "hv1"})
        assert issued["role"] == "backend" and issued["registrar"] == cloud.root.endpoint
        token = EnrolmentToken.parse(issued["token"])
        assert issued["token"].startswith("cl1.") and token.root_key == cloud.root.security.keypair.public
        expires = dt.datetime.fromisoformat(issued["expires_at"]).replace(tzinfo=None)  # utcnow() is naive
        assert dt.timedelta(minutes=59) < expires - utcnow() <= dt.timedelta(hours=1)
        security = cloud.enrol("hv1", issued["token"])
        cloud.leaf("hv1", security)
        cloud.root.wait_for_hosts(1, timeout=10)
    assert cloud.root.submit("ping", timeout=5).wait(10)["hv1"].ok
    with cloud.frontend.db.read() as session:
        key = session.execute(select(NodeKey).where(NodeKey.node_id == "hv1")).scalar_one()
        stored = session.execute(select(Enrolment)).scalar_one()
    assert (key.role, key.public_key, key.revoked_at) == ("backend", security.keypair.public, None)
    assert stored.token_hash != token.secret and stored.used_at is not None
    listed = cloud.admin.ok("get", "/v1/hypervisors/enrolments")["items"]
    assert [(e["name"], e["role"], e["state"]) for e in listed] == [("hv1", "backend", "used")]
    assert "token" not in listed[0] and token.secret not in str(listed)
    events = cloud.admin.ok("get", "/v1/events", params={"kind": "host.enrolled"})["items"]
    assert [e["host"] for e in events] == ["hv1"]
    assert [e["event"] for e in logs if e.get("log_level") != "debug" and e["event"].startswith("enrolment_")] == [
        "enrolment_issued", "enrolment_token_redeemed"]
    assert token.secret not in str(logs)
    # The route-signing key its JOIN brought is kept beside its key, for the next root to check with.
    until(lambda: sign_key_kept(cloud, "hv1") == security.signer.public)
    assert load_keyring(cloud.frontend.db).sign_key_of("hv1") == security.signer.public


def sign_key_kept(cloud: SecureCloud, node: str) -> str | None:
    with cloud.frontend.db.read() as session:
        return session.execute(select(NodeKey.sign_key).where(NodeKey.node_id == node)).scalar_one_or_none()


def test_an_agent_token_enrols_an_agent_only(cloud: SecureCloud) -> None:
    token = cloud.token("ag1", role="agent")
    with pytest.raises(SecurityError, match="enrols ag1 with role agent, not backend"):
        cloud.enrol("ag1", token, Role.BACKEND)
    cloud.enrol("ag1", token, Role.AGENT)
    assert cloud.admin.ok("get", "/v1/hypervisors/enrolments")["items"][0]["state"] == "used"


def test_an_expired_token_is_refused(cloud: SecureCloud) -> None:
    token = cloud.token("hv1", ttl_s=60)
    with cloud.frontend.db.transaction() as session:
        session.execute(update(Enrolment).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    with capture_logs() as logs, pytest.raises(SecurityError, match="this token expired at .*ask an admin for a new"):
        cloud.enrol("hv1", token)
    refused = [e for e in logs if e["event"] == "enrolment_token_refused"]
    assert [(e["node"], e["reason"]) for e in refused] == [("hv1", "expired")]
    assert secret_of(token) not in str(logs)
    assert cloud.admin.ok("get", "/v1/hypervisors/enrolments")["items"][0]["state"] == "expired"
    assert len(cloud.root.security.keyring) == 0


def test_a_token_is_good_once(cloud: SecureCloud) -> None:
    token = cloud.token("hv1")
    first = cloud.enrol("hv1", token)
    # The same node asking again (its first answer lost) is told it is enrolled ...
    cloud.enrol("hv1", token, keys=first.keypair)
    # ... but the token lets no other key in.
    with capture_logs() as logs, pytest.raises(SecurityError, match="this token was used already"):
        cloud.enrol("hv1", token)
    assert [e["reason"] for e in logs if e["event"] == "enrolment_token_refused"] == ["used"]
    assert cloud.root.security.keyring.key_of("hv1") == first.keypair.public


def test_a_token_enrols_its_own_name_only(cloud: SecureCloud) -> None:
    token = cloud.token("hv1")
    with pytest.raises(SecurityError, match="this token enrols 'hv1', not 'hv2'"):
        cloud.enrol("hv2", token)
    cloud.enrol("hv1", token)  # the refusal did not use it up
    assert cloud.root.security.keyring.key_of("hv2") is None


def test_unknown_and_malformed_tokens_are_refused_without_echo(cloud: SecureCloud) -> None:
    root_key = cloud.root.security.keypair.public
    forged = EnrolmentToken("x" * 43, root_key).text()
    with capture_logs() as logs:
        with pytest.raises(SecurityError, match="unknown enrolment token") as unknown:
            cloud.enrol("hv1", forged)
        with pytest.raises(SecurityError, match="not an enrolment token") as malformed:
            enrol(cloud.root.endpoint, "hv1", Role.BACKEND, "cl1.not a secret", Security(KeyPair.generate(), root_key),
                  timeout=5)
    assert "x" * 43 not in str(unknown.value) + str(malformed.value) + str(logs)
    assert [e["reason"] for e in logs if e["event"] == "enrolment_token_refused"] == ["unknown", "malformed"]


def test_a_revoked_node_is_cut_off_and_its_key_refused_afterwards(cloud: SecureCloud) -> None:
    security = cloud.enrol("hv1", cloud.token("hv1"))
    other = cloud.enrol("hv2", cloud.token("hv2"))
    leaf = cloud.leaf("hv1", security)
    cloud.leaf("hv2", other)
    cloud.root.wait_for_hosts(2, timeout=10)
    # hv1's hypervisor row, as the host monitor (not running here) registers it.
    with cloud.frontend.db.transaction() as session:
        session.add(Hypervisor(name="hv1", org_id=admin_org_id(cloud.frontend.db), status="up"))
    with capture_logs() as logs:
        revoked = cloud.admin.ok("post", "/v1/hypervisors/hv1/revoke")
        assert revoked["name"] == "hv1" and revoked["public_key"] == security.keypair.public
        assert revoked["revoked_at"] is not None
        until(lambda: "hv1" not in cloud.up(), timeout=10)
        leaf.stop()
        # Started again with its old key: refused at every attempt.
        cloud.leaf("hv1", security)
        time.sleep(SETTINGS.dead_after * 3)
        assert "hv1" not in cloud.up()
        # hv2 stays (a stall of the loaded machine longer than its dead-after may drop it a moment).
        until(lambda: "hv2" in cloud.up(), timeout=10)
    events = {e["event"] for e in logs}
    assert {"node_key_revoked", "node_revoked", "peer_refused"} <= events, events
    assert cloud.admin.ok("get", "/v1/hypervisors/hv1")["enabled"] is False
    keyring = load_keyring(cloud.frontend.db)  # what the next start loads
    assert keyring.key_of("hv1") is None and security.keypair.public in keyring.revoked
    assert keyring.key_of("hv2") == other.keypair.public
    # Revoking again answers the same record; a node never enrolled is not found.
    assert cloud.admin.ok("post", "/v1/hypervisors/hv1/revoke")["revoked_at"] == revoked["revoked_at"]
    assert error_of(cloud.admin.post("/v1/hypervisors/nosuch/revoke"))["code"] == "not_found"
    events_api = cloud.admin.ok("get", "/v1/events", params={"kind": "host.revoked"})["items"]
    assert [e["host"] for e in events_api] == ["hv1"]
    # It may come back as a new key pair, with a new token.
    renewed = cloud.enrol("hv1", cloud.token("hv1"))
    cloud.leaf("hv1", renewed)
    until(lambda: "hv1" in cloud.up())
    # Its signing key is the new key pair's: the old one went with the old key.
    until(lambda: sign_key_kept(cloud, "hv1") == renewed.signer.public)


def test_an_enrolment_token_is_never_kept_for_a_repeat(cloud: SecureCloud) -> None:
    """Its answer is a secret the database must not hold in the clear: the call takes no
    Idempotency-Key, and each call issues a token of its own."""
    headers = {"Idempotency-Key": "enrol-hv1"}
    issued = [cloud.admin.ok("post", "/v1/hypervisors/enrolments", 201, json={"name": "hv1"}, headers=headers)
              for _ in range(2)]
    assert issued[0]["token"] != issued[1]["token"]
    with cloud.frontend.db.read() as session:
        assert session.execute(select(IdempotencyKey)).first() is None
        assert len(session.execute(select(Enrolment)).all()) == 2


def test_issuing_refuses_what_cannot_be_enrolled(cloud: SecureCloud) -> None:
    cloud.enrol("hv1", cloud.token("hv1"))
    taken = cloud.admin.post("/v1/hypervisors/enrolments", json={"name": "hv1"})
    assert taken.status_code == 409 and "revoke it first" in error_of(taken)["reason"]
    own = error_of(cloud.admin.post("/v1/hypervisors/enrolments", json={"name": "root"}))
    assert (own["code"], own["field"]) == ("invalid", "name")
    for body, bad in (({"name": "hv2", "ttl_s": 7 * 86400 + 1}, "ttl_s"), ({"name": "hv2", "ttl_s": 10}, "ttl_s"),
                      ({"name": "hv2", "role": "root"}, "role"), ({"name": "bad name"}, "name")):
        assert error_of(cloud.admin.post("/v1/hypervisors/enrolments", json=body))["field"] == bad
    assert cloud.admin.ok("post", "/v1/hypervisors/enrolments", 201, json={"name": "hv2", "ttl_s": 7 * 86400})


def test_only_admins_enrol_list_and_revoke(cloud: SecureCloud) -> None:
    cloud.enrol("hv1", cloud.token("hv1"))
    tenant = cloud.admin.tenant("acme")
    for method, path, body in (("post", "/v1/hypervisors/enrolments", {"name": "hv9"}),
                               ("get", "/v1/hypervisors/enrolments", None),
                               ("post", "/v1/hypervisors/hv1/revoke", None)):
        answer = getattr(tenant, method)(path, **({"json": body} if body else {}))
        assert answer.status_code == 403 and error_of(answer)["code"] == "forbidden", (path, answer.text)
    assert cloud.root.security.keyring.key_of("hv1") is not None


def test_a_frontend_without_curve_enrols_nothing(db_url: str, tmp_path: Path) -> None:
    for cloud in make_cloud(db_url, tmp_path / "frontend", hosts=1):  # a tree with tree.curve false
        for path in ("/v1/hypervisors/enrolments", "/v1/hypervisors/hv0/revoke"):
            answer = cloud.admin.post(path, json={"name": "hv1"} if path.endswith("enrolments") else None)
            assert answer.status_code == 409 and "tree.curve: false" in error_of(answer)["reason"], answer.text
        assert cloud.admin.ok("get", "/v1/hypervisors/enrolments") == {"items": []}
