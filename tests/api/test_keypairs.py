"""Keypairs: importing OpenSSH public keys, their fingerprints, and who may see and delete them."""

from __future__ import annotations

import base64

import pytest

from frontend.db.models import Flavor, Image, Instance
from frontend.services import Frontend
from tests.api.conftest import Api, error_of

# Made with ssh-keygen; each with the fingerprint `ssh-keygen -lf` printed for it.
KEYS = {
    "ed25519": ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM9cT+9lAc68DxQQX5EMQe5nxCJw736wbzEqSyZ6T+EI alice@laptop",
                "SHA256:hy1GHgRWgW3rh5OlJ4vWRS3hRUPlLxJqIGja3dHY7oU"),
    "rsa": ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC2OClNkEmRM6y+2+i8nPwTp/3KytdboPPE719hizUGOfX6xcLTozCOhyHJkTZh5kiv"
            "7FK8ruop7XwxKS4f2MhK7aoXjbPIIfNK2vdljcZIQIEVlzhgRY3LYPemjuEUjM6FbtyynbLEuRi5kdhrGySbMJTXUFTC16i6goepkNQ0"
            "t6waZOhnP8bKKkza1jwWccexMZ8Z3Cvw9OGq8jls2oUWwsyl899wCHyDJ+a1mTveJQw2DUSsLJIvz5Tp+c6/k877kziR29Ck3nfGh5x3"
            "mnLoyp0bWCSAeHIQ+mnREvMaSoAWWUYEWTQstgx/yDmMUU+Z9X6iXss9qduEc6JZtXJp alice@laptop",
            "SHA256:W+QeSX2/5c2zsUVnevoqKA+CCb3T3zc+6xNgEkK9Lu4"),
    "nistp256": ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKp421BvgRgDVCEXHSF6a+OtUmH9"
                 "PtinGfTHXFAPNovAR6jeYApediaiZo2l3T6YXBg2R9MaBfiJfwaK6j8u07s=",
                 "SHA256:wL2DJs/WpwsEHg7Csp1cRzk8ihTMsABZFk2grs7ouv4"),
    "nistp384": ("ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBF3o7OUrXrjOG+MDQSrIYuQ1AWnp"
                 "+FKqgBFE2+0FQBEuKw56orCW0Gv8wJPWnDGkkNb25bpKk0kWfEhAux5jWCN5maoveRivf9Kpd+Prld+/hvaYdEQ5H/QcJwYqprli"
                 "4A== alice@laptop",
                 "SHA256:jWKqwKRsEKNezzunSULTm/6Rw074Hzn6WfJzieML9tI"),
    "nistp521": ("ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAAO926aTzYmEAfH39C9WC7hln+8"
                 "COnd68EmU4GrsEGlKSet5Wr9J77GblClCdx8UJdA4D5UeyAtHqz+kJbAG0rjXwBhOAnGSTv5U8gdVmcqzTcK9hnL/D+i7CCn/vmL"
                 "AIq+7vTXCXBsoFWtdPfbfpAhfbUlmaFtd1wzzLZGyoayhInxmA== alice@laptop",
                 "SHA256:BWij8NY6hbhzS1OIAOeq5ruRn4jNXspAI8j5eMp7Hoo"),
}
ED25519 = KEYS["ed25519"][0]


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _key(*fields: bytes, kind: str = "ssh-rsa") -> str:
    return f"{kind} {base64.b64encode(b''.join(_ssh_string(f) for f in fields)).decode()}"


def test_import_every_key_type_with_openssh_fingerprints(admin: Api) -> None:
    member = admin.tenant("acme", role="member")
    for name, (key, fp) in KEYS.items():
        created = member.ok("post", "/v1/keypairs", 201, json={"name": name, "public_key": key + "\n"})
        assert created["fingerprint"] == fp and created["public_key"] == key and created["status"] == "active"
        assert created["org_id"] == member.who["org_id"]
    assert [k["name"] for k in member.ok("get", "/v1/keypairs")["items"]] == sorted(KEYS)
    shown = member.ok("get", "/v1/keypairs/ed25519")
    assert member.ok("get", f"/v1/keypairs/{shown['id']}") == shown
    member.ok("delete", "/v1/keypairs/ed25519", 204)
    assert member.get(f"/v1/keypairs/{shown['id']}").status_code == 404
    assert "ed25519" not in [k["name"] for k in member.ok("get", "/v1/keypairs")["items"]]


ED25519_DATA = ED25519.split()[1]
SHORT_RSA = _key(b"ssh-rsa", (65537).to_bytes(3, "big"), (1 << 511 | 1).to_bytes(64, "big"))


@pytest.mark.parametrize("key, reason", [
    ("", "key type must be one of"),
    ("ssh-dss AAAAB3NzaC1kc3M= bob", "key type must be one of"),
    (f"ssh-ed25519  {ED25519_DATA}", "not hold a valid ssh-ed25519 key"),
    ("ssh-ed25519", "not hold a valid ssh-ed25519 key"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    (f"ssh-rsa {ED25519_DATA}", "not hold a valid ssh-rsa key"),
    (f"ecdsa-sha2-nistp384 {KEYS['nistp256'][0].split()[1]}", "not hold a valid ecdsa-sha2-nistp384 key"),
    (f"ssh-ed25519 {ED25519_DATA[:-8]}", "truncated"),
    (_key(b"ssh-ed25519", b"\x01" * 31, kind="ssh-ed25519"), "32 bytes"),
    (_key(b"ssh-ed25519", b"\x01" * 32, b"extra", kind="ssh-ed25519"), "not hold a valid ssh-ed25519 key"),
    (SHORT_RSA, "at least 1024 bits"),
    (_key(b"ecdsa-sha2-nistp256", b"nistp256", b"\x02" + b"\x01" * 64, kind="ecdsa-sha2-nistp256"),
     "not hold a valid ecdsa-sha2-nistp256 key"),
    (ED25519 + "\nssh-ed25519 " + ED25519_DATA, "one line"),
    (ED25519.replace(" alice", "\talice"), "control characters"),
    (ED25519 + " \x1b[31m", "control characters"),
    (ED25519 + " " + "x" * 16 * 1024, "at most 16384 characters"),
])
def test_malformed_keys_are_refused(admin: Api, key: str, reason: str) -> None:
    response = admin.post("/v1/keypairs", json={"name": "k", "public_key": key})
    error = error_of(response)
    assert response.status_code == 422 and error["field"] == "public_key", error
    assert reason in error["reason"], error


def test_bad_names_and_duplicates_are_refused(admin: Api) -> None:
    member = admin.tenant("acme", role="member")
    response = member.post("/v1/keypairs", json={"name": "my key", "public_key": ED25519})
    assert response.status_code == 422 and error_of(response)["field"] == "name"
    response = member.post("/v1/keypairs", json={"name": "k", "public_key": ED25519, "type": "ssh"})
    assert response.status_code == 422 and error_of(response)["reason"] == "unknown field"
    member.ok("post", "/v1/keypairs", 201, json={"name": "k", "public_key": ED25519})
    response = member.post("/v1/keypairs", json={"name": "k", "public_key": KEYS["rsa"][0]})
    assert response.status_code == 409 and error_of(response)["field"] == "name"
    # Names are unique within an organization only.
    admin.tenant("initech", role="member").ok("post", "/v1/keypairs", 201, json={"name": "k", "public_key": ED25519})


def test_other_organizations_keypairs_are_invisible(admin: Api) -> None:
    a, b = admin.tenant("acme"), admin.tenant("initech")
    key = a.ok("post", "/v1/keypairs", 201, json={"name": "k", "public_key": ED25519})
    assert b.ok("get", "/v1/keypairs")["items"] == []
    for path in (f"/v1/keypairs/{key['id']}", "/v1/keypairs/k"):
        assert b.get(path).status_code == 404
        response = b.delete(path)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    a.ok("get", f"/v1/keypairs/{key['id']}")


def test_reader_may_look_but_not_import_or_delete(admin: Api) -> None:
    reader = admin.tenant("acme", role="reader")
    response = reader.post("/v1/keypairs", json={"name": "k", "public_key": ED25519})
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    assert reader.ok("get", "/v1/keypairs")["items"] == []
    assert reader.delete("/v1/keypairs/k").status_code == 403


def test_a_keypair_in_use_cannot_be_deleted(admin: Api, frontend: Frontend) -> None:
    member = admin.tenant("acme", role="member")
    key = member.ok("post", "/v1/keypairs", 201, json={"name": "k", "public_key": ED25519})
    with frontend.db.transaction() as session:
        flavor = Flavor(org_id=member.who["org_id"], name="tiny", vcpus=1, memory_mb=128, disk_gb=1, status="active")
        image = Image(org_id=member.who["org_id"], name="img", format="raw", status="active")
        session.add_all([flavor, image])
        session.flush()
        instance = Instance(org_id=member.who["org_id"], name="vm", flavor_id=flavor.id, image_id=image.id,
                            keypair_id=key["id"], vcpus=1, memory_mb=128, disk_gb=1, status="active")
        session.add(instance)
    response = member.delete("/v1/keypairs/k")
    assert response.status_code == 409 and "1 instances use this keypair" in error_of(response)["reason"]
    with frontend.db.transaction() as session:
        session.delete(session.get(Instance, instance.id))
    member.ok("delete", "/v1/keypairs/k", 204)
