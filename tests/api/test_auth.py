"""Logging in, tokens and roles."""

from __future__ import annotations

from tests.api.conftest import ADMIN_PASSWORD, Api, error_of


def test_login_and_whoami(admin: Api) -> None:
    me = admin.ok("get", "/v1/whoami")
    assert me["user_name"] == "admin" and me["role"] == "admin"


def test_wrong_password_and_unknown_user_look_the_same(client: object) -> None:
    api = Api(client)  # type: ignore[arg-type]
    for name, password in (("admin", "wrong"), ("nobody", ADMIN_PASSWORD)):
        response = api.post("/v1/tokens", json={"username": name, "password": password})
        assert response.status_code == 401
        assert error_of(response)["reason"] == "wrong user name or password"


def test_calls_without_or_with_a_bad_token_are_refused(client: object) -> None:
    api = Api(client)  # type: ignore[arg-type]
    response = api.get("/v1/flavors")
    assert response.status_code == 401 and error_of(response)["code"] == "unauthenticated"
    response = api.get("/v1/flavors", headers={"Authorization": "Bearer forged"})
    assert response.status_code == 401 and error_of(response)["reason"] == "unknown token"


def test_logout_revokes_the_token(admin: Api) -> None:
    admin.ok("delete", "/v1/tokens/current", 204)
    response = admin.get("/v1/whoami")
    assert response.status_code == 401 and "revoked" in error_of(response)["reason"]


def test_reader_cannot_write_and_member_cannot_manage_users(admin: Api) -> None:
    reader = admin.tenant("acme", role="reader")
    response = reader.post("/v1/flavors", json={"name": "x", "vcpus": 1, "memory_mb": 128, "disk_gb": 1})
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    member = admin.tenant("initech", role="member")
    response = member.post("/v1/users", json={"name": "bob", "password": "long-enough"})
    assert response.status_code == 403


def test_tenant_admin_cannot_grant_admin(admin: Api) -> None:
    boss = admin.tenant("acme")
    response = boss.post("/v1/users", json={"name": "mallory", "password": "long-enough", "role": "admin"})
    assert response.status_code == 403 and error_of(response)["field"] == "role"
    created = boss.ok("post", "/v1/users", 201, json={"name": "bob", "password": "long-enough", "role": "member"})
    assert created["org_id"] == boss.who["org_id"]


def test_password_change_ends_other_sessions(admin: Api) -> None:
    boss = admin.tenant("acme")
    bob = boss.ok("post", "/v1/users", 201, json={"name": "bob", "password": "long-enough"})
    bob_api = boss.login("bob", "long-enough")
    boss.ok("patch", f"/v1/users/{bob['id']}", json={"password": "another-one"})
    assert bob_api.get("/v1/whoami").status_code == 401
    boss.login("bob", "another-one")


def test_invalid_body_names_the_field(admin: Api) -> None:
    response = admin.post("/v1/orgs", json={"name": "bad name; rm -rf /"})
    error = error_of(response)
    assert response.status_code == 422 and error["field"] == "name" and "letters, digits" in error["reason"]
    response = admin.post("/v1/orgs", json={"name": "ok", "colour": "red"})
    assert error_of(response) == {"code": "invalid", "field": "colour", "reason": "unknown field",
                                  "message": "colour: unknown field"}


def test_unknown_routes_and_methods_answer_in_the_error_shape(admin: Api) -> None:
    response = admin.get("/v1/no-such-thing")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    response = admin.put("/v1/flavors")
    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"


def test_an_organization_goes_with_its_history_and_not_before_it_is_empty(admin: Api) -> None:
    boss = admin.tenant("acme")
    boss.ok("post", "/v1/keypairs", 201, json={"name": "k", "public_key": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8oVb0k7nXh1k7JfF6QY3J2m4bGvT3Q0C3bX2m1Bz0 me@host")})
    org = boss.who["org_id"]
    response = admin.delete(f"/v1/orgs/{org}")
    assert response.status_code == 409 and "keypairs" in error_of(response)["reason"]
    boss.ok("delete", "/v1/keypairs/k", 204)
    response = admin.delete(f"/v1/orgs/{org}")
    assert response.status_code == 409 and "users" in error_of(response)["reason"]
    users = admin.client.get("/v1/users", headers=boss.headers).json()["items"]
    for user in users:
        admin.ok("delete", f"/v1/users/{user['id']}", 204)
    admin.ok("delete", f"/v1/orgs/{org}", 204)


def test_a_disabled_organization_is_locked_out_and_no_one_climbs_above_their_role(admin: Api) -> None:
    boss = admin.tenant("acme")
    admin_id = admin.ok("get", "/v1/whoami")["user_id"]
    admin.ok("post", "/v1/users", 201, json={"name": "root2", "password": "long-enough", "role": "admin",
                                              "org": boss.who["org_id"]})
    root2 = admin.client.get("/v1/users", headers=boss.headers).json()["items"]
    target = next(u for u in root2 if u["name"] == "root2")
    response = boss.patch(f"/v1/users/{target['id']}", json={"password": "taken-over"})
    assert response.status_code == 403  # a tenant admin cannot take over an admin's account
    assert boss.get(f"/v1/users/{admin_id}").status_code == 404
    admin.ok("patch", f"/v1/orgs/{boss.who['org_id']}", json={"status": "disabled"})
    response = boss.get("/v1/whoami")
    assert response.status_code == 401 and "disabled" in error_of(response)["reason"]


def test_a_user_name_no_user_could_have_is_invalid_at_login(client: object) -> None:
    # Found by the API fuzzer: on PostgreSQL a NUL in the name was a 500.
    api = Api(client)  # type: ignore[arg-type]
    for name in ("admin\x00", "admin; rm -rf /", "-admin"):
        response = api.post("/v1/tokens", json={"username": name, "password": ADMIN_PASSWORD})
        assert response.status_code == 422 and error_of(response)["field"] == "username", name


def test_a_body_that_is_not_json_is_invalid(admin: Api) -> None:
    # Bytes that are not UTF-8 were FastAPI's 400 with code http_error; broken JSON named field "0".
    for body in (b"\xff\xfe{}", b"{\"name\": ", b"not json"):
        response = admin.post("/v1/zones", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and error_of(response) == {
            "code": "invalid", "field": None, "reason": "the body is not valid JSON",
            "message": "the body is not valid JSON"}, body
