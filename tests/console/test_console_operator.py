"""The operator's pages, checked without a browser: an admin's tree (also at 10,000 hosts),
hypervisors, organizations and users, enrolments, events and audit log; the API's refusals of
them to tenants; CSRF on every form they add."""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
from fastapi import FastAPI

from frontend.bootstrap import admin_org_id
from frontend.console._treeview import branches
from frontend.db.models import Event
from sci.root import NodeStatus
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import ADMIN_PASSWORD, Api
from tests.console.browserless import tenant_with_reader, Console, posted_forms, reason_of

ADMIN_PAGES = ("/ui/tree", "/ui/hypervisors", "/ui/enrolments", "/ui/audit")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    path = tmp_path_factory.mktemp("console-operator")
    yield from make_cloud(f"sqlite:///{path / 'state.db'}", path / "frontend", hosts=2)


@pytest.fixture(scope="module")
def acme(cloud: Cloud) -> Api:
    """Organization acme's tenant admin (acme-user), and a reader of it."""
    return tenant_with_reader(cloud, "acme")


@pytest.fixture
def admin(app: FastAPI) -> Console:
    console = Console(app)
    console.login("admin", ADMIN_PASSWORD)
    return console


def test_only_an_admin_is_offered_the_operator_pages(app: FastAPI, admin: Console, acme: Api) -> None:
    for page in (*ADMIN_PAGES, "/ui/orgs", "/ui/events"):
        assert admin.get(page).status_code == 200, page
    assert 'aria-label="Operator"' in admin.get("/ui/instances").text
    tenant = Console(app)
    tenant.login("acme-user", "password-of-acme")
    assert 'aria-label="Operator"' not in tenant.get("/ui/instances").text


def test_a_tenant_is_refused_the_operator_pages_with_the_apis_reason(app: FastAPI, acme: Api, cloud: Cloud) -> None:
    tenant = Console(app)
    tenant.login("acme-user", "password-of-acme")
    reasons = {page: reason_of(tenant.get(page).text) for page in ADMIN_PAGES}
    assert reasons == {"/ui/tree": "reading the tree needs the admin role; you are tenant-admin",
                       "/ui/hypervisors": "listing hypervisors needs the admin role; you are tenant-admin",
                       "/ui/enrolments": "listing enrolments needs the admin role; you are tenant-admin",
                       "/ui/audit": "reading the audit log needs the admin role; you are tenant-admin"}
    assert all(tenant.get(page).status_code == 403 for page in ADMIN_PAGES)
    admins = admin_org_id(cloud.frontend.db)
    assert tenant.get(f"/ui/orgs/{admins}").status_code == 404
    orgs = tenant.get("/ui/orgs").text
    assert "acme" in orgs and "/ui/orgs/" + admins not in orgs and "Create organization" not in orgs
    # A forged operator's form is the API's to refuse, as a page is.
    assert reason_of(tenant.post("/ui/hypervisors/hv0/disable").text) == \
        "changing a hypervisor needs the admin role; you are tenant-admin"
    assert tenant.post("/ui/orgs", {"name": "sneaky"}).status_code == 403


def test_every_operator_form_needs_the_sessions_csrf_token(admin: Console, acme: Api, cloud: Cloud) -> None:
    org = acme.who["org_id"]
    forms = {"/ui/hypervisors/hv0/disable": {}, "/ui/orgs": {"name": "forged"},
             f"/ui/orgs/{org}/quotas": {"quota_instances": "1"}, f"/ui/orgs/{org}/disable": {},
             f"/ui/orgs/{org}/delete": {}, f"/ui/orgs/{org}/users": {"name": "forged", "password": "password-x"},
             f"/ui/orgs/{org}/users/acme-reader/disable": {}, f"/ui/orgs/{org}/users/acme-reader/delete": {},
             "/ui/enrolments": {"name": "hv9"}, "/ui/enrolments/revoke": {"name": "hv0"}}
    for path, data in forms.items():
        for token in ("", "forged"):
            answer = admin.post(path, data, csrf=token)
            assert answer.status_code == 403 and "CSRF" in answer.text, path
    assert cloud.admin.ok("get", "/v1/hypervisors/hv0")["enabled"]
    assert cloud.admin.ok("get", f"/v1/orgs/{org}")["status"] == "active"
    assert cloud.admin.ok("get", f"/v1/orgs/{org}")["quotas"]["instances"] is None
    assert {u["name"] for u in cloud.admin.ok("get", f"/v1/users?org={org}")["items"]} == {"acme-user", "acme-reader"}


def test_hypervisors_show_capacity_and_state_and_can_be_disabled(admin: Console, cloud: Cloud) -> None:
    page = admin.get("/ui/hypervisors").text
    row = re.search(r"<tr><td>hv0</td>.*?</tr>", page, re.S)
    assert row and ">up<" in row[0] and " s</td>" in row[0], page
    assert "2 hypervisors" in page and "2 up" in page
    assert admin.post("/ui/hypervisors/hv0/disable").headers["location"] == "/ui/hypervisors"
    assert not cloud.admin.ok("get", "/v1/hypervisors/hv0")["enabled"]
    disabled = admin.get("/ui/hypervisors?state=disabled").text
    assert "<td>hv0</td>" in disabled and "<td>hv1</td>" not in disabled and "Enable hv0" in disabled
    admin.post("/ui/hypervisors/hv0/enable")
    assert cloud.admin.ok("get", "/v1/hypervisors/hv0")["enabled"]


def test_organizations_their_quotas_and_users(admin: Console, cloud: Cloud, app: FastAPI) -> None:
    created = admin.post("/ui/orgs", {"name": "initech"})
    assert created.status_code == 303
    org = created.headers["location"].rsplit("/", 1)[1]
    refused = admin.post(f"/ui/orgs/{org}/quotas", {"quota_instances": "lots"})
    assert refused.status_code == 422 and 'class="field">quotas.instances<' in refused.text
    admin.post(f"/ui/orgs/{org}/quotas", {"quota_instances": "3", "quota_vcpus": ""})
    quotas = cloud.admin.ok("get", f"/v1/orgs/{org}")["quotas"]
    assert quotas["instances"] == 3 and quotas["vcpus"] is None
    assert admin.post(f"/ui/orgs/{org}/users", {"name": "peter", "password": "short"}).status_code == 422
    admin.post(f"/ui/orgs/{org}/users", {"name": "peter", "password": "password-of-peter", "role": "member"})
    page = admin.get(f"/ui/orgs/{org}").text
    assert "<td>peter</td><td>member</td>" in page and 'max="3"' in page
    peter = Console(app)
    peter.login("peter", "password-of-peter")
    own = peter.get(f"/ui/orgs/{org}").text
    assert "<td>peter</td>" in own and posted_forms(own) == ["/ui/logout"], "a member manages no one"
    admin.post(f"/ui/orgs/{org}/users/peter/disable")
    assert peter.get("/ui/instances").headers["location"] == "/ui/login", "disabling ends the sessions"
    refused = admin.post(f"/ui/orgs/{org}/delete")
    assert refused.status_code == 409 and "1 users" in reason_of(refused.text)
    admin.post(f"/ui/orgs/{org}/users/peter/delete")
    assert admin.post(f"/ui/orgs/{org}/delete").headers["location"] == "/ui/orgs"
    assert "initech" not in admin.get("/ui/orgs").text


def test_enrolment_refusals_show_the_apis_reason(admin: Console) -> None:
    # This cloud's tree runs without CURVE: the API refuses enrolments, and the page says why.
    answer = admin.post("/ui/enrolments", {"name": "hv9", "role": "backend", "ttl_s": "600"})
    assert answer.status_code == 409 and "without CURVE" in reason_of(answer.text)
    bad = admin.post("/ui/enrolments/revoke", {"name": "../hv0"})
    assert bad.status_code == 422 and 'class="field">name<' in bad.text


def test_events_newest_first_filtered_and_live(admin: Console, cloud: Cloud, acme: Api, app: FastAPI) -> None:
    with cloud.frontend.db.transaction() as session:
        admins = admin_org_id(cloud.frontend.db)
        session.add_all([Event(org_id=admins, kind="host.down", host="hv1", message="hv1 is down (older)"),
                         Event(org_id=acme.who["org_id"], kind="drift.vanished", message="acme's drift")])
    page = admin.get("/ui/events?kind=host&within=3600&limit=50").text
    assert "hv1 is down (older)" in page and "acme&#39;s drift" not in page
    assert 'http-equiv="refresh"' not in page
    live = admin.get("/ui/events?live=1").text
    assert '<meta http-equiv="refresh" content="5">' in live and "checked" in live
    refused = admin.get("/ui/events?kind=Not+a+kind")
    assert refused.status_code == 422 and 'class="field">kind<' in refused.text and 'value="Not a kind"' in refused.text
    tenant = Console(app)
    tenant.login("acme-user", "password-of-acme")
    own = tenant.get("/ui/events").text
    assert "acme&#39;s drift" in own and "hv1 is down" not in own


def test_the_audit_log_filtered(admin: Console, acme: Api) -> None:
    acme.post("/v1/networks", json={"name": "audited"})
    page = admin.get("/ui/audit?user=acme-user&method=POST&path_prefix=/v1/networks").text
    assert "POST /v1/networks" in page and "<td>acme-user</td>" in page
    assert "PATCH" not in re.sub(r"<select.*?</select>", "", page, flags=re.S)
    refused = admin.get("/ui/audit?status=999")
    assert refused.status_code == 422 and 'class="field">status<' in refused.text


def _big_tree(agents: int, hosts: int) -> list[NodeStatus]:
    """A tree of ``hosts`` spread over ``agents``: one agent silent, ten hosts of another down."""
    nodes = [NodeStatus("root", "root", None, 0, agents, None, "up")]
    for a in range(agents):
        nodes.append(NodeStatus(f"agent{a:03}", "agent", "root", 1, hosts // agents, 0.1,
                                "silent" if a == 7 else "up"))
    for h in range(hosts):
        agent = h % agents
        down = h % 1000 == 3  # ten hosts of agent003
        nodes.append(NodeStatus(f"hv{h:05}", "backend", None if down else f"agent{agent:03}", 2, 0,
                                None if down else 0.2, "down" if down else "up"))
    return nodes


def test_the_tree_of_ten_thousand_hosts_is_one_line_per_agent(admin: Console, cloud: Cloud,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = _big_tree(100, 10_000)
    monkeypatch.setattr(cloud.root, "tree_status", lambda **kw: nodes)
    with cloud.frontend.db.transaction() as session:
        session.add(Event(org_id=admin_org_id(cloud.frontend.db), kind="host.reparented", host="hv00042",
                          message="hv00042 moved from agent041 to agent042"))
    page = admin.get("/ui/tree")
    assert page.status_code == 200
    html = page.text
    # The root (open), each agent and the hosts under none (down: the tree gives them no parent), closed.
    assert html.count("<summary>") == 102 and html.count("<details open>") == 1
    assert "10000 hosts" in html and "9990 up" in html and "10 down" in html
    assert "Not up (11)" in html, "the silent agent and the 10 hosts down, listed first"
    assert "hv00042 moved from agent041 to agent042" in html
    agent42 = re.search(r"<summary><span class=\"node\">agent042</span>.*?</details>", html, re.S)
    assert agent42 and 'reparented</span></summary>' in agent42[0] and "hv00042 up 0.2 s <span" in agent42[0]
    assert re.search(r"Under no relay</span>\s*· 0 agents, 10 hosts", html)


def test_an_agent_under_an_agent_is_drawn_inside_its_parents_branch() -> None:
    def node(node_id: str, role: str, parent: str | None, state: str = "up") -> dict[str, Any]:
        return {"node_id": node_id, "role": role, "parent": parent, "level": 0, "children": 0,
                "heartbeat_age": 0.1, "state": state}

    nodes = [node("root", "root", None), node("a1", "agent", "root"), node("a2", "agent", "a1"),
             node("h1", "backend", "a2"), node("h2", "backend", "a2", "suspect"), node("h3", "backend", None, "down"),
             node("a3", "agent", None, "down")]
    tops = branches(nodes, moved={"h1", "a2"})
    assert [b.relay["node_id"] for b in tops] == ["root", "a3", ""], "a down agent has no parent either"
    a2 = tops[0].relays[0].relays[0]
    assert a2.relay["node_id"] == "a2" and a2.relay_moved
    assert [h["node_id"] for h in a2.hosts] == ["h2", "h1"], "the suspect host first, then the one that moved"
    assert a2.states == {"up": 1, "suspect": 1} and a2.moved == {"h1"}
    assert [h["node_id"] for h in tops[-1].hosts] == ["h3"]
