"""The console's rules, checked without a browser: cookie flags, CSRF, logout, org isolation and
roles, error texts and the instance list's speed.  Pages are fetched like a browser would (the
login form, then cookies), on an in-process cloud with a real tree and recording hosts."""

from __future__ import annotations

from urllib.parse import urlsplit
from typing import Any, Iterator

import pytest
from fastapi import FastAPI
from sqlalchemy import event

from frontend.console import PAGE_SIZE
from frontend.db.models import Instance
from frontend.hostalias import alias
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api
from tests.console.browserless import Console, csrf_of, posted_forms, reason_of
from tests.support.qcow2 import fake_qcow2


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    path = tmp_path_factory.mktemp("console")
    yield from make_cloud(f"sqlite:///{path / 'state.db'}", path / "frontend", hosts=1)


@pytest.fixture(scope="module")
def acme(cloud: Cloud) -> dict[str, Any]:
    """Organization acme with a launched instance, its tenant admin's API and a reader of it."""
    admin = cloud.admin
    admin.ok("post", "/v1/flavors", 201, json={"name": "small", "vcpus": 1, "memory_mb": 256, "disk_gb": 1})
    api = admin.tenant("acme")
    image = api.ok("post", "/v1/images", 201, json={"name": "tiny", "format": "qcow2"})
    api.ok("put", f"/v1/images/{image['id']}/file", content=fake_qcow2())
    accepted = api.ok("post", "/v1/instances", 202, json={"name": "web", "flavor": "small", "image": "tiny"})
    assert cloud.wait_task(api, accepted["task"]["id"])["status"] == "succeeded"
    admin.ok("post", "/v1/users", 201, json={"name": "acme-reader", "password": "password-of-reader",
                                             "role": "reader", "org": api.who["org_id"]})
    return {"api": api, "instance": accepted["resource"], "image": image}


@pytest.fixture(scope="module")
def other(cloud: Cloud) -> Api:
    return cloud.admin.tenant("other")


def test_login_sets_an_httponly_samesite_strict_cookie_secure_over_https(app: FastAPI, acme: dict[str, Any]) -> None:
    console = Console(app, https=True)
    answer = console.login("acme-user", "password-of-acme")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/instances"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("cloudland_token="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/ui"} <= flags
    assert console.get("/ui/instances").status_code == 200


def test_over_plain_http_the_cookie_cannot_be_secure(app: FastAPI, acme: dict[str, Any]) -> None:
    # A browser never sends a Secure cookie over http: there the console works only without it.
    answer = Console(app).login("acme-user", "password-of-acme")
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("cloudland_token="))
    assert "secure" not in cookie.lower() and "httponly" in cookie.lower()


def test_a_wrong_password_shows_the_apisreason_of(app: FastAPI, acme: dict[str, Any]) -> None:
    answer = Console(app).login("acme-user", "not-the-password")
    assert answer.status_code == 401 and "wrong user name or password" in answer.text
    assert not any(c.startswith("cloudland_token=") for c in answer.headers.get_list("set-cookie"))


def test_forms_without_the_sessions_csrf_token_are_refused(app: FastAPI, acme: dict[str, Any]) -> None:
    console, stranger = Console(app), Console(app)
    console.login("acme-user", "password-of-acme")
    stranger.login("acme-user", "password-of-acme")
    foreign = csrf_of(stranger.get("/ui/keypairs").text)  # the same user's, but of another session
    for token in ("", "forged", foreign):
        answer = console.post("/ui/networks", {"name": f"net-{len(token)}"}, csrf=token)
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert acme["api"].ok("get", "/v1/networks")["items"] == []
    login = Console(app).client.post("/ui/login", data={"username": "acme-user", "password": "password-of-acme"})
    assert login.status_code == 403, "a login form must come from the console's own page"


def test_logout_revokes_the_token_and_the_back_button_finds_the_login_page(app: FastAPI,
                                                                           acme: dict[str, Any]) -> None:
    console = Console(app)
    console.login("acme-user", "password-of-acme")
    token = console.client.cookies["cloudland_token"]
    page = console.get("/ui/instances")
    assert page.headers["cache-control"] == "no-store", "the back button would show it from the cache"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    answer = console.post("/ui/logout")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    assert "cloudland_token" not in console.client.cookies
    assert Api(console.client, token).get("/v1/whoami").status_code == 401
    # A stale cookie (a browser that kept it) is no better: the token is revoked.
    for stale in (token, "made-up", "not a token"):
        console.client.cookies.set("cloudland_token", stale, path="/ui")
        assert console.get("/ui/instances").headers["location"] == "/ui/login"


def test_another_organizations_instance_is_not_found(app: FastAPI, acme: dict[str, Any], other: Api) -> None:
    console = Console(app)
    console.login("other-user", "password-of-other")
    ident = acme["instance"]["id"]
    for path in (f"/ui/instances/{ident}", f"/ui/instances/{ident}/console"):
        answer = console.get(path)
        assert answer.status_code == 404 and reason_of(answer.text) == f"no instance '{ident}'"
    assert console.post(f"/ui/instances/{ident}/stop").status_code == 404
    assert "web" not in console.get("/ui/instances").text


def test_a_reader_sees_no_actions_and_a_forged_one_is_refused(app: FastAPI, acme: dict[str, Any]) -> None:
    console = Console(app)
    console.login("acme-reader", "password-of-reader")
    ident = acme["instance"]["id"]
    page = console.get(f"/ui/instances/{ident}")
    assert page.status_code == 200 and "web" in page.text
    assert f"/ui/instances/{ident}/stop" not in page.text and "Delete" not in page.text
    answer = console.post(f"/ui/instances/{ident}/stop")
    assert answer.status_code == 403
    assert reason_of(answer.text) == "stop of an instance needs the member role; you are reader"


def test_a_readers_lists_have_no_forms_but_logout(app: FastAPI, acme: dict[str, Any]) -> None:
    console = Console(app)
    console.login("acme-reader", "password-of-reader")
    for page in ("/ui/instances", "/ui/instances/new", "/ui/volumes", "/ui/images", "/ui/keypairs", "/ui/networks",
                 "/ui/security-groups", f"/ui/orgs/{acme['api'].who['org_id']}", "/ui/orgs", "/ui/events",
                 "/ui/routers", "/ui/floating-ips"):
        answer = console.get(page)
        assert answer.status_code == 200
        assert posted_forms(answer.text) == ["/ui/logout"], page


def test_bad_input_shows_the_apis_field_andreason_of(app: FastAPI, acme: dict[str, Any]) -> None:
    console = Console(app)
    console.login("acme-user", "password-of-acme")
    created = console.post("/ui/security-groups", {"name": "web"})
    assert created.status_code == 303
    answer = console.post(created.headers["location"] + "/rules",
                          {"direction": "ingress", "protocol": "tcp", "port_min": "http"})
    assert answer.status_code == 422
    assert 'class="field">port_min<' in answer.text and "valid integer" in reason_of(answer.text)
    assert console.get("/ui/instances?page=zero").status_code == 422


def test_a_thousand_instances_list_a_page_at_a_time_and_load_no_more(cloud: Cloud, app: FastAPI, other: Api,
                                                         acme: dict[str, Any]) -> None:
    template = acme["instance"]
    with cloud.frontend.db.transaction() as session:
        session.add_all(Instance(org_id=other.who["org_id"], name=f"i{n:04}", flavor_id=template["flavor_id"],
                                 image_id=template["image_id"], vcpus=1, memory_mb=256, disk_gb=1, status="active")
                        for n in range(1000))
    console = Console(app)
    console.login("other-user", "password-of-other")
    loaded: list[Instance] = []

    def count(target: Instance, context: Any) -> None:
        loaded.append(target)
    event.listen(Instance, "load", count)
    try:
        first = console.get("/ui/instances")
    finally:
        event.remove(Instance, "load", count)
    # The speed of a page is bench's to measure; what makes it fast is that only a page is read.
    assert len(loaded) <= PAGE_SIZE + 1, len(loaded)
    assert first.text.count('<td><a href="/ui/instances/') == PAGE_SIZE and "?page=2" in first.text
    last = console.get(f"/ui/instances?page={1000 // PAGE_SIZE}")
    assert "i0999" in last.text and "?page=" in last.text and 'rel="next"' not in last.text


def test_console_pages_and_their_refusals_are_html_under_ui_only(app: FastAPI) -> None:
    console = Console(app)
    missing = console.get("/ui/no-such-page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert console.get("/ui/login").headers["content-type"].startswith("text/html")
    assert console.get("/ui/static/console.css").status_code == 200
    assert console.get("/v1/no-such").json()["error"]["code"] == "not_found"


def test_a_failed_launch_shows_each_hosts_reason_on_its_task_page(cloud: Cloud, app: FastAPI,
                                                                  acme: dict[str, Any]) -> None:
    console = Console(app)
    console.login("acme-user", "password-of-acme")
    cloud.computes["hv0"].fail["instance.create"] = "no room on hv0"
    try:
        launched = console.post("/ui/instances", {"name": "doomed", "flavor": "small", "image": "tiny",
                                                  "user_data": "#cloud-config\n"})
        assert launched.status_code == 303 and launched.headers["location"].startswith("/ui/tasks/")
        task_id = launched.headers["location"].rsplit("/", 1)[1]
        cloud.wait_task(acme["api"], task_id)
    finally:
        del cloud.computes["hv0"].fail["instance.create"]
    page = console.get(launched.headers["location"])
    assert 'id="task-status">failed<' in page.text and 'http-equiv="refresh"' not in page.text
    host = alias(acme["api"].who["org_id"], "hv0")
    assert f"{host}: no room on hv0" in page.text and "hv0:" not in page.text.replace(f"{host}:", "")


def _followed(cloud: Cloud, api: Api, answer: Any) -> dict[str, Any]:
    """The task a form's answer leads to, once it has ended."""
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/tasks/"), answer.text
    return cloud.wait_task(api, answer.headers["location"].rsplit("/", 1)[1])


def test_routers_and_floating_ips(cloud: Cloud, app: FastAPI, acme: dict[str, Any]) -> None:
    api = acme["api"]
    cloud.admin.ok("post", "/v1/networks", 201, json={"name": "public", "external": True})
    cloud.admin.ok("post", "/v1/subnets", 201, json={"name": "public-sub", "network": "public",
                                                     "cidr": "203.0.113.0/29"})
    net = api.ok("post", "/v1/networks", 201, json={"name": "routed"})
    api.ok("post", "/v1/subnets", 201, json={"name": "routed-sub", "network": "routed", "cidr": "10.9.0.0/24"})
    port = api.ok("post", "/v1/ports", 201, json={"name": "door", "network": "routed"})
    console = Console(app)
    console.login("acme-user", "password-of-acme")

    assert _followed(cloud, api, console.post("/ui/routers", {"name": "r1", "network": net["id"],
                                                              "snat": "on"}))["status"] == "succeeded"
    page = console.get("/ui/routers").text
    assert "<td>r1</td><td>routed</td>" in page and "Turn SNAT off" in page
    router = api.ok("get", "/v1/routers/r1")
    _followed(cloud, api, console.post(f"/ui/routers/{router['id']}/snat", {}))
    assert api.ok("get", "/v1/routers/r1")["snat"] is False

    assert console.post("/ui/floating-ips", {"network": "public"}).headers["location"] == "/ui/floating-ips"
    fip = api.ok("get", "/v1/floating-ips")["items"][0]
    page = console.get("/ui/floating-ips").text
    assert f"Associate {fip['address']} with" in page and f"door {port['ip_address']} on routed" in page
    _followed(cloud, api, console.post(f"/ui/floating-ips/{fip['id']}/associate", {"port": port["id"]}))
    assert api.ok("get", f"/v1/floating-ips/{fip['id']}")["port_id"] == port["id"]
    refused = console.post(f"/ui/routers/{router['id']}/delete")
    assert refused.status_code == 409 and "disassociate them first" in reason_of(refused.text)
    _followed(cloud, api, console.post(f"/ui/floating-ips/{fip['id']}/disassociate"))
    assert api.ok("get", f"/v1/floating-ips/{fip['id']}")["port_id"] is None
    _followed(cloud, api, console.post(f"/ui/floating-ips/{fip['id']}/release"))
    assert "No floating IPs." in console.get("/ui/floating-ips").text
    _followed(cloud, api, console.post(f"/ui/routers/{router['id']}/delete"))
    assert "No routers." in console.get("/ui/routers").text
    external = console.post("/ui/routers", {"name": "r2", "network": "public"})  # not the tenant's to route
    assert external.status_code == 404 and 'class="field">network<' in external.text


def test_every_tenant_form_needs_the_sessions_csrf_token(app: FastAPI, acme: dict[str, Any]) -> None:
    console = Console(app)
    console.login("acme-user", "password-of-acme")
    forms = {"/ui/routers": {"name": "forged", "network": "routed"}, "/ui/routers/r1/snat": {},
             "/ui/routers/r1/delete": {}, "/ui/floating-ips": {}, "/ui/floating-ips/x/associate": {"port": "door"},
             "/ui/floating-ips/x/disassociate": {}, "/ui/floating-ips/x/release": {},
             "/ui/instances/web/resize": {"flavor": "small"}, "/ui/instances/web/image": {"name": "forged"},
             "/ui/volumes/x/snapshot": {"name": "forged"}, "/ui/snapshots/x/volume": {"name": "forged"},
             "/ui/snapshots/x/delete": {}}
    for path, data in forms.items():
        for token in ("", "forged"):
            answer = console.post(path, data, csrf=token)
            assert answer.status_code == 403 and "CSRF" in answer.text, path


def test_the_organizations_quota_use(app: FastAPI, acme: dict[str, Any], cloud: Cloud) -> None:
    org = acme["api"].who["org_id"]
    cloud.admin.ok("patch", f"/v1/orgs/{org}", json={"quotas": {"instances": 10}})
    console = Console(app)
    console.login("acme-reader", "password-of-reader")
    page = console.get("/ui/instances").text
    assert f'href="/ui/orgs/{org}">Quotas<' in page
    quotas = console.get(f"/ui/orgs/{org}").text
    used = acme["api"].ok("get", f"/v1/orgs/{org}")["usage"]["instances"]
    assert f'<meter min="0" max="10" high="8.0" value="{used}"' in quotas and "Save quotas" not in quotas


def test_resize_an_image_of_an_instance_and_snapshots(cloud: Cloud, app: FastAPI, acme: dict[str, Any]) -> None:
    api = acme["api"]
    cloud.admin.ok("post", "/v1/flavors", 201, json={"name": "medium", "vcpus": 2, "memory_mb": 512, "disk_gb": 1})
    for compute in cloud.computes.values():  # the host sends the image's file through the test client
        compute.upload = lambda url, data: _sent(cloud, url, data)
    box = api.ok("post", "/v1/instances", 202, json={"name": "box", "flavor": "small", "image": "tiny"})["resource"]
    assert cloud.wait_task(api, api.ok("get", f"/v1/tasks?resource={box['id']}")["items"][0]["id"])["status"] \
        == "succeeded"
    console = Console(app)
    console.login("acme-user", "password-of-acme")
    page = console.get(f"/ui/instances/{box['id']}").text
    assert ">medium (2 vCPU" in page and ">small (" not in page and "stop it first" in page

    assert _followed(cloud, api, console.post(f"/ui/instances/{box['id']}/resize",
                                              {"flavor": "medium"}))["status"] == "succeeded"
    assert api.ok("get", "/v1/instances/box")["vcpus"] == 2
    refused = console.post(f"/ui/instances/{box['id']}/image", {"name": "box-image"})
    assert refused.status_code == 409 and 'class="field">status<' in refused.text
    cloud.wait_task(api, api.ok("post", "/v1/instances/box/stop", 202)["task"]["id"])
    assert 'action="/ui/instances/' + box["id"] + '/image"' in console.get(f"/ui/instances/{box['id']}").text
    assert _followed(cloud, api, console.post(f"/ui/instances/{box['id']}/image",
                                              {"name": "box-image"}))["status"] == "succeeded"
    assert api.ok("get", "/v1/images/box-image")["status"] == "active"

    volume = api.ok("post", "/v1/volumes", 202, json={"name": "disk", "size_gb": 1, "instance": "box"})
    cloud.wait_task(api, volume["task"]["id"])
    assert _followed(cloud, api, console.post(f"/ui/volumes/{volume['resource']['id']}/snapshot",
                                              {"name": "snap"}))["status"] == "succeeded"
    page = console.get("/ui/volumes").text
    assert "<td>snap</td><td>disk</td>" in page and "Restore snap as a new volume" in page
    snap = api.ok("get", "/v1/snapshots/snap")
    assert _followed(cloud, api, console.post(f"/ui/snapshots/{snap['id']}/volume",
                                              {"name": "disk-copy"}))["status"] == "succeeded"
    assert api.ok("get", "/v1/volumes/disk-copy")["size_gb"] == 1
    assert _followed(cloud, api, console.post(f"/ui/snapshots/{snap['id']}/delete"))["status"] == "succeeded"
    assert "No snapshots." in console.get("/ui/volumes").text


def _sent(cloud: Cloud, url: str, data: bytes) -> tuple[int, str]:
    """A host's PUT of an image's file to its signed upload link, through the test client."""
    parts = urlsplit(url)
    response = cloud.client.put(f"{parts.path}?{parts.query}", content=data)
    return response.status_code, response.text
