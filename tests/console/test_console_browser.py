"""The console in a real browser (Debian's chromium, driven by Playwright) against a real local
cloud: a frontend process serving TLS, an agent and backends answering compute ops with the
recording stand-ins of ``tests/support/compute_ops.py``.

Screenshots of the main pages go to ``.artefacts/console/`` (not compared: they are for people).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil
import pytest

from localcluster import LocalCluster
from tests.support.cloudapi import admin_client, finished, ok, running, tenant_client, until
from tests.support.qcow2 import fake_qcow2

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make installs it)")

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / ".artefacts" / "console"
TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = tmp_path_factory.mktemp("console-cloud")
    c = LocalCluster(workdir / "cluster", agents=1, backends=2, tree=TREE, ops_modules=["tests.support.compute_ops"],
                     env={"CLOUDLAND_TEST_COMPUTE_LOG": str(workdir / "ops.log")})
    with running(c):
        yield c


@pytest.fixture(scope="module")
def cloud(cluster: LocalCluster) -> dict[str, Any]:
    """Organizations acme (a tenant admin, a reader, an image and an instance) and other (a tenant admin)."""
    admin = admin_client(cluster)
    until(lambda: len([h for h in ok(admin.get("/v1/hypervisors"))["items"] if h["facts"]]) == 2, 60,
          "2 hypervisors with capacity")
    ok(admin.post("/v1/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}), 201)
    acme = tenant_client(cluster, admin, "acme")
    tenant_client(cluster, admin, "other")
    org = ok(acme.get("/v1/whoami"))["org_id"]
    ok(admin.post("/v1/users", json={"name": "acme-reader", "password": "password-of-reader", "role": "reader",
                                     "org": org}), 201)
    image = ok(acme.post("/v1/images", json={"name": "tiny", "format": "qcow2"}), 201)
    ok(acme.put(f"/v1/images/{image['id']}/file", content=fake_qcow2()))
    accepted = ok(acme.post("/v1/instances", json={"name": "db", "flavor": "small", "image": "tiny"}), 202)
    finished(acme, accepted, 60)
    ok(admin.post("/v1/networks", json={"name": "public", "external": True}), 201)
    ok(admin.post("/v1/subnets", json={"name": "public-sub", "network": "public", "cidr": "203.0.113.0/29"}), 201)
    return {"acme": acme, "instance": accepted["resource"]}


@pytest.fixture(scope="module")
def browser(cluster: LocalCluster) -> Iterator[Any]:
    """Chromium, closed before the cloud stops (which checks that nothing new is left running)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: run sh scripts/ensure-test-tools.sh (as root)")
    before = set(psutil.Process().children(recursive=True))
    with sync_api.sync_playwright() as playwright:
        # Chromium's sandbox refuses to run as root, which the test machines are.
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield browser
        ours = set(psutil.Process().children(recursive=True)) - before
        browser.close()
    # Chromium's helpers and Playwright's driver exit a moment after close() returns.
    _, alive = psutil.wait_procs(ours, timeout=15)
    assert not alive, f"the browser left {alive} running"


@pytest.fixture
def page(browser: Any, cluster: LocalCluster) -> Iterator[Any]:
    # The frontend's certificate is its own, generated on first start: the browser is told to accept it.
    context = browser.new_context(base_url=cluster.api_url, ignore_https_errors=True,
                                  viewport={"width": 1100, "height": 760})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _login(page: Any, username: str, password: str) -> None:
    page.goto("/ui/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/ui/instances")


def _wait_for_task(page: Any) -> None:
    """The task page reloads itself until the task ends: its final status."""
    page.wait_for_url("**/ui/tasks/*")
    status = page.locator("#task-status")
    sync_api.expect(status).to_have_text(re.compile("succeeded|failed"), timeout=60_000)
    assert status.inner_text() == "succeeded", page.locator("main").inner_text()


def test_the_tenant_journey(page: Any, cloud: dict[str, Any]) -> None:
    _login(page, "acme-user", "password-of-acme")

    page.get_by_role("link", name="Networks").click()
    page.get_by_label("Name", exact=True).first.fill("net")
    page.get_by_role("button", name="Create network").click()
    sync_api.expect(page.locator("td", has_text="net").first).to_be_visible()
    page.get_by_label("CIDR").fill("10.0.0.0/24")
    page.locator("#subnet-name").fill("sub")
    page.get_by_role("button", name="Add subnet").click()
    sync_api.expect(page.get_by_text("sub 10.0.0.0/24")).to_be_visible()
    _shot(page, "networks")

    page.get_by_role("link", name="Security groups").click()
    page.locator("#group-name").fill("web")
    page.get_by_role("button", name="Create security group").click()
    page.get_by_label("Protocol").select_option("tcp")
    page.get_by_label("First port").fill("22")
    page.get_by_role("button", name="Add rule").click()
    rule = page.locator("table", has_text="Rules").locator("tbody tr", has_text="ingress")
    sync_api.expect(rule).to_have_count(1)
    sync_api.expect(rule).to_contain_text("tcp")
    sync_api.expect(rule.locator("td").nth(2)).to_have_text("22")
    _shot(page, "security-group")

    page.get_by_role("link", name="Images").click()
    sync_api.expect(page.get_by_role("row", name="tiny")).to_contain_text("active")
    _shot(page, "images")

    page.get_by_role("link", name="Launch").click()
    page.get_by_label("Name").fill("web1")
    page.get_by_label("Image").select_option(label="tiny")
    page.get_by_label("Network").select_option(label="net")
    page.get_by_label("web").check()
    page.get_by_label("User data (cloud-init)").fill("#cloud-config\n")
    _shot(page, "launch")
    page.get_by_role("button", name="Launch").click()
    _wait_for_task(page)
    _shot(page, "task")

    page.get_by_role("link", name="The instance").click()
    sync_api.expect(page.locator("#state")).to_have_text("active")
    sync_api.expect(page.locator("dd", has_text="10.0.0.")).to_be_visible()
    _shot(page, "instance")
    instance_id = page.url.rsplit("/", 1)[1]
    page.get_by_role("link", name="Instances").click()
    sync_api.expect(page.get_by_role("row", name="web1")).to_contain_text("active")
    _shot(page, "instances")
    page.get_by_role("link", name="web1").click()
    page.get_by_role("link", name="Console log").click()
    sync_api.expect(page.locator("#console-log")).to_contain_text(f"console of {instance_id}")
    _shot(page, "console-log")

    _route_and_float(page)

    page.get_by_role("link", name="Volumes").click()
    page.get_by_label("Name", exact=True).fill("data")
    page.get_by_label("Size (GB)").fill("1")
    page.get_by_role("button", name="Create volume").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The volumes").click()
    page.get_by_label("Attach data to").select_option(label="web1")
    page.get_by_role("button", name="Attach").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The volumes").click()
    sync_api.expect(page.get_by_role("row", name="data")).to_contain_text("web1")
    _shot(page, "volumes")
    page.get_by_role("button", name="Detach volume data").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The volumes").click()
    page.get_by_role("button", name="Delete volume data").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The volumes").click()
    sync_api.expect(page.locator("main")).to_contain_text("No volumes.")

    page.goto(f"/ui/instances/{instance_id}")
    page.get_by_role("button", name="Stop").click()
    _wait_for_task(page)
    page.goto(f"/ui/instances/{instance_id}")
    page.get_by_role("button", name="Delete").click()
    _wait_for_task(page)
    page.goto("/ui/instances")
    sync_api.expect(page.get_by_role("link", name="web1")).to_have_count(0)

    page.goto("/ui/security-groups")
    page.get_by_role("link", name="web").click()
    page.get_by_role("button", name="Delete security group web").click()
    sync_api.expect(page.get_by_role("link", name="web")).to_have_count(0)
    page.goto("/ui/networks")
    page.get_by_role("button", name="Delete subnet sub").click()
    page.get_by_role("button", name="Delete network net").click()
    sync_api.expect(page.get_by_role("cell", name="net", exact=True)).to_have_count(0)  # public stays, the admin's


def test_an_image_is_uploaded_with_its_progress_and_a_refused_one_says_why(page: Any, cloud: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    disk, junk = tmp_path / "disk.qcow2", tmp_path / "junk.qcow2"
    disk.write_bytes(fake_qcow2(virtual_size=2 << 30, length=8 << 20))
    junk.write_bytes(b"not a disk image")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.resource_type) if r.url.endswith("/ui/images") and
            r.method == "POST" else None)
    _login(page, "acme-user", "password-of-acme")
    page.get_by_role("link", name="Images").click()
    page.locator("#image-name").fill("uploaded")
    page.get_by_label("File").set_input_files(str(disk))
    _shot(page, "image-upload")
    page.get_by_role("button", name="Upload", exact=True).click()
    row = page.get_by_role("row", name="uploaded")
    sync_api.expect(row).to_contain_text("active")
    sync_api.expect(row).to_contain_text("2 GB")
    assert sent == ["xhr"], "the page's script sends the form, to show its progress"

    page.locator("#image-name").fill("junk")
    page.get_by_label("File").set_input_files(str(junk))
    page.get_by_role("button", name="Upload", exact=True).click()
    sync_api.expect(page.locator(".field")).to_have_text("format")
    sync_api.expect(page.locator(".reason")).to_contain_text("not a qcow2 image")
    page.goto("/ui/images")
    sync_api.expect(page.get_by_role("row", name="junk")).to_have_count(0)
    page.get_by_role("button", name="Delete image uploaded").click()
    sync_api.expect(page.get_by_role("row", name="uploaded")).to_have_count(0)


def _route_and_float(page: Any) -> None:
    """A router on the instance's network, and a floating IP associated with the instance, then undone."""
    page.get_by_role("link", name="Routers").click()
    page.get_by_label("Name").fill("gw")
    page.get_by_label("Network (one router each)").select_option(label="net")
    page.get_by_role("button", name="Create router").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The routers").click()
    sync_api.expect(page.get_by_role("row", name="gw")).to_contain_text("on")
    _shot(page, "routers")

    page.get_by_role("link", name="Floating IPs").click()
    page.get_by_role("button", name="Allocate").click()
    address = page.locator("tbody tr td").first.inner_text()
    assert address.startswith("203.0.113."), address
    port = page.get_by_label(f"Associate {address} with")
    port.select_option(port.locator("option", has_text="web1").get_attribute("value"))
    page.get_by_role("button", name="Associate").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The floating IPs").click()
    sync_api.expect(page.get_by_role("row", name=address)).to_contain_text("web1")
    _shot(page, "floating-ips")
    page.get_by_role("button", name=f"Disassociate {address}").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The floating IPs").click()
    page.get_by_role("button", name=f"Release {address}").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The floating IPs").click()
    sync_api.expect(page.locator("main")).to_contain_text("No floating IPs.")

    page.get_by_role("link", name="Routers").click()
    page.get_by_role("button", name="Delete router gw").click()
    _wait_for_task(page)
    page.get_by_role("link", name="The routers").click()
    sync_api.expect(page.locator("main")).to_contain_text("No routers.")

    page.get_by_role("link", name="Quotas").click()
    sync_api.expect(page.get_by_role("row", name="instances").locator("td").first).to_have_text("2")  # db and web1
    _shot(page, "quotas")


def test_the_operators_pages(page: Any, cloud: dict[str, Any], cluster: LocalCluster) -> None:
    _login(page, "admin", cluster.admin_password())
    operator = page.get_by_role("navigation", name="Operator")

    operator.get_by_role("link", name="Tree").click()
    sync_api.expect(page.locator("main")).to_contain_text("2 hosts")
    summary = page.locator("#tree summary", has=page.locator(".node", has_text=re.compile("^agent0$")))
    agent = summary.locator("xpath=..")
    sync_api.expect(summary).to_contain_text(re.compile(r"agent\s+(up|suspect)"))
    assert agent.get_attribute("open") is None, "an agent's line starts closed"
    summary.focus()
    page.keyboard.press("Enter")  # a <details> opens from the keyboard, no script needed
    sync_api.expect(agent).to_have_attribute("open", "")
    _shot(page, "tree")

    operator.get_by_role("link", name="Hypervisors").click()
    sync_api.expect(page.locator("tbody tr")).to_have_count(2)
    sync_api.expect(page.locator("tbody tr").first).to_contain_text("up")
    _shot(page, "hypervisors")

    operator.get_by_role("link", name="Organizations").click()
    page.get_by_role("link", name="acme").click()
    sync_api.expect(page.get_by_role("row", name="acme-reader")).to_contain_text("reader")
    _shot(page, "organization")

    operator.get_by_role("link", name="Enrolments").click()
    page.get_by_label("The new node's name (its node_id)").fill("hv-new")
    page.get_by_role("button", name="Issue token").click()
    sync_api.expect(page.get_by_label("Token")).to_have_value(re.compile("^cl1[.]"))
    _shot(page, "enrolment-issued")
    page.get_by_role("link", name="Back to the enrolments").click()
    sync_api.expect(page.get_by_role("row", name="hv-new")).to_contain_text("pending")
    _shot(page, "enrolments")

    page.get_by_role("link", name="Events").first.click()
    page.get_by_label("Live").check()
    page.get_by_role("button", name="Show").click()
    sync_api.expect(page.locator('meta[http-equiv="refresh"]')).to_have_attribute("content", "5")
    sync_api.expect(page.locator("tbody tr").first).not_to_contain_text("No events.")
    _shot(page, "events")

    operator.get_by_role("link", name="Audit log").click()
    page.get_by_label("User", exact=True).fill("admin")
    page.get_by_label("Method").select_option("POST")
    page.get_by_role("button", name="Show").click()
    newest = page.locator("tbody tr").first  # the token issued above
    sync_api.expect(newest).to_contain_text("POST /v1/hypervisors/enrolments")
    sync_api.expect(newest).to_contain_text("201")
    _shot(page, "audit")


def test_a_tenant_is_refused_the_operators_pages(page: Any, cloud: dict[str, Any]) -> None:
    _login(page, "acme-user", "password-of-acme")
    sync_api.expect(page.get_by_role("navigation", name="Operator")).to_have_count(0)
    answer = page.goto("/ui/tree")
    assert answer is not None and answer.status == 403
    sync_api.expect(page.locator(".reason")).to_have_text("reading the tree needs the admin role; you are tenant-admin")


def test_keypairs_are_made_with_the_private_key_shown_once(page: Any, cloud: dict[str, Any]) -> None:
    _login(page, "acme-user", "password-of-acme")
    page.get_by_role("link", name="Keypairs").click()
    page.locator("#new-name").fill("laptop")
    page.get_by_role("button", name="Create").click()
    sync_api.expect(page.get_by_label("Private key")).to_have_value(re.compile("BEGIN OPENSSH PRIVATE KEY"))
    _shot(page, "keypair-created")
    page.goto("/ui/keypairs")
    sync_api.expect(page.locator("main")).not_to_contain_text("PRIVATE KEY")
    sync_api.expect(page.get_by_role("cell", name="laptop", exact=True)).to_be_visible()


def test_another_tenants_instance_is_not_found_by_url(page: Any, cloud: dict[str, Any]) -> None:
    _login(page, "other-user", "password-of-other")
    answer = page.goto(f"/ui/instances/{cloud['instance']['id']}")
    assert answer is not None and answer.status == 404
    sync_api.expect(page.locator(".reason")).to_have_text(f"no instance '{cloud['instance']['id']}'")


def test_a_reader_has_no_actions_and_a_forged_one_is_refused(page: Any, cloud: dict[str, Any]) -> None:
    _login(page, "acme-reader", "password-of-reader")
    ident = cloud["instance"]["id"]
    page.goto(f"/ui/instances/{ident}")
    sync_api.expect(page.locator("#state")).to_have_text("active")
    sync_api.expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    sync_api.expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    _shot(page, "reader-instance")
    # The form a member's page would have, made by hand in the reader's page, with the session's own CSRF token.
    page.evaluate("""ident => {
        const form = document.createElement('form');
        form.method = 'post';
        form.action = `/ui/instances/${ident}/stop`;
        form.appendChild(document.querySelector('input[name=csrf]').cloneNode());
        document.body.appendChild(form);
        form.submit();
    }""", ident)
    page.wait_for_url(f"**/ui/instances/{ident}/stop")
    sync_api.expect(page.locator(".reason")).to_have_text("stop of an instance needs the member role; you are reader")
    assert ok(cloud["acme"].get(f"/v1/instances/{ident}"))["status"] == "active"


def test_a_form_without_its_csrf_token_is_refused(page: Any, cloud: dict[str, Any]) -> None:
    _login(page, "acme-user", "password-of-acme")
    page.goto("/ui/networks")
    page.locator("#network-name").fill("sneaky")
    page.evaluate("document.querySelector('form[action=\"/ui/networks\"] input[name=csrf]').remove()")
    with page.expect_response("**/ui/networks") as answer:
        page.get_by_role("button", name="Create network").click()
    assert answer.value.status == 403
    sync_api.expect(page.locator(".refusal")).to_contain_text("CSRF")
    networks = ok(cloud["acme"].get("/v1/networks"))["items"]
    assert "sneaky" not in [n["name"] for n in networks]


def test_after_logout_the_back_button_finds_the_login_page(page: Any, cloud: dict[str, Any],
                                                           cluster: LocalCluster) -> None:
    _login(page, "acme-user", "password-of-acme")
    page.goto(f"/ui/instances/{cloud['instance']['id']}")
    cookie = next(c for c in page.context.cookies() if c["name"] == "cloudland_token")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/ui/login")
    _shot(page, "login")
    page.go_back()
    page.wait_for_url("**/ui/login")
    sync_api.expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    revoked = httpx.get(f"{cluster.api_url}/v1/whoami", verify=cluster.ssl_context(),
                        headers={"Authorization": f"Bearer {cookie['value']}"})
    assert revoked.status_code == 401
