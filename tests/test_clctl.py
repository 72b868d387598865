"""clctl in-process: against the real API app (on SQLite), and against a scripted API for what
the app cannot do without hypervisors (tasks, the tree).

clctl's one connection factory, ``clctl.client.http_client``, is swapped for one that returns
a ``TestClient`` of the app (an ``httpx.Client``) or an ``httpx.Client`` on a ``MockTransport``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import structlog.testing
from click.testing import CliRunner, Result
from fastapi import FastAPI
from fastapi.testclient import TestClient

import clctl.client
import clctl.tasks
from clctl.main import cli
from frontend.api.app import create_app
from frontend.bootstrap import bootstrap
from frontend.db.models import Hypervisor, utcnow
from frontend.services import Frontend
from tests.api.conftest import ADMIN_PASSWORD, make_frontend
from tests.support.qcow2 import fake_qcow2

ENDPOINT = "http://cloud.test:8080"


def invoke(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env, prog_name="clctl")


def table_rows(output: str) -> list[list[str]]:
    """Header and rows of a table whose cells have no spaces, split on whitespace."""
    return [line.split() for line in output.splitlines() if line.strip()]


def record(output: str) -> dict[str, str]:
    """A printed record (``field  value`` lines) as a map."""
    return dict(line.split(None, 1) for line in output.splitlines() if " " in line.strip())


def config_path(home: Path) -> Path:
    return home / ".config" / "cloudland" / "clctl.yaml"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME; nothing from the developer's shell or config leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "CLOUDLAND_ENDPOINT", "CLOUDLAND_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def frontend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Frontend]:
    monkeypatch.setenv("CLOUDLAND_ADMIN_PASSWORD", ADMIN_PASSWORD)
    # The app's logs would land in the output CliRunner captures; keep them apart.
    with structlog.testing.capture_logs():
        fe = make_frontend(f"sqlite:///{tmp_path / 'state.db'}", tmp_path / "frontend")
        bootstrap(fe.db, fe.data_dir)
        yield fe
        fe.tasks.stop()
        fe.db.dispose()


@pytest.fixture
def app(frontend: Frontend) -> FastAPI:
    return create_app(frontend)


@pytest.fixture
def endpoints(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wire clctl to the app; returns the endpoints clctl connected to, in order."""
    seen: list[str] = []

    def connect(endpoint: str, timeout: httpx.Timeout, ca_file: str | None) -> httpx.Client:
        seen.append(endpoint)
        return TestClient(app)

    monkeypatch.setattr(clctl.client, "http_client", connect)
    return seen


@pytest.fixture
def admin(endpoints: list[str]) -> str:
    """Logged in as admin; returns the token."""
    result = invoke("login", "--endpoint", ENDPOINT, "--username", "admin", "--password-stdin",
                    input=ADMIN_PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    token = json.loads(invoke("login", "--endpoint", ENDPOINT, "-u", "admin", "--password-stdin", "--json",
                              input=ADMIN_PASSWORD).stdout)["token"]
    return str(token)


# Logging in ---------------------------------------------------------------------------------


def test_login_whoami_logout(endpoints: list[str], home: Path) -> None:
    result = invoke("login", "--endpoint", ENDPOINT + "/", "--username", "admin", "--password-stdin",
                    input=ADMIN_PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert f"logged in to {ENDPOINT} as admin (admin)" in result.stdout
    assert endpoints == [ENDPOINT]
    path = config_path(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = path.read_text()
    assert f"endpoint: {ENDPOINT}" in saved and "token: " in saved
    assert ADMIN_PASSWORD not in saved

    result = invoke("whoami")
    assert result.exit_code == 0, result.output
    me = record(result.stdout)
    assert me["user_name"] == "admin" and me["role"] == "admin" and me["endpoint"] == ENDPOINT
    me = json.loads(invoke("whoami", "--json").stdout)
    assert me["user_name"] == "admin" and "endpoint" not in me  # --json is the API's answer as it is
    assert json.loads(invoke("--json", "whoami").stdout) == me

    result = invoke("logout")
    assert result.exit_code == 0, result.output
    assert "token" not in path.read_text() and ENDPOINT in path.read_text()
    result = invoke("whoami")
    assert result.exit_code == 3 and "not logged in" in result.stderr and result.stdout == ""


def test_login_prompts_for_the_password(endpoints: list[str]) -> None:
    result = invoke("login", "--endpoint", ENDPOINT, input=f"admin\n{ADMIN_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert ADMIN_PASSWORD not in result.output  # asked for without echo


def test_wrong_password_is_refused_and_saves_nothing(endpoints: list[str], home: Path) -> None:
    result = invoke("login", "--endpoint", ENDPOINT, "-u", "admin", "--password-stdin", input="wrong\n")
    assert result.exit_code == 1
    assert "wrong user name or password" in result.stderr
    assert not config_path(home).exists()


def test_login_replaces_a_readable_config_file_with_a_private_one(endpoints: list[str], home: Path) -> None:
    path = config_path(home)
    path.parent.mkdir(parents=True)
    path.write_text("endpoint: http://old:8080\nkeep: me\n")
    path.chmod(0o644)
    assert invoke("login", "--endpoint", ENDPOINT, "-u", "admin", "--password-stdin",
                  input=ADMIN_PASSWORD).exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "keep: me" in path.read_text() and "http://old" not in path.read_text()


def test_logout_with_a_token_the_api_no_longer_takes(app: FastAPI, admin: str, home: Path) -> None:
    TestClient(app).delete("/v1/tokens/current", headers={"Authorization": f"Bearer {admin}"})
    result = invoke("logout")
    assert result.exit_code == 0 and "already ended" in result.stdout
    assert "token" not in config_path(home).read_text()


def test_endpoint_and_token_precedence(admin: str, endpoints: list[str]) -> None:
    endpoints.clear()
    assert invoke("flavor", "list").exit_code == 0  # the saved endpoint
    assert invoke("flavor", "list", env={"CLOUDLAND_ENDPOINT": "http://from-env:1"}).exit_code == 0
    assert invoke("--endpoint", "http://from-flag:2", "flavor", "list",
                  env={"CLOUDLAND_ENDPOINT": "http://from-env:1"}).exit_code == 0
    assert endpoints == [ENDPOINT, "http://from-env:1", "http://from-flag:2"]
    # A token from the environment or --token beats the saved one; the API does not know this one.
    for args, env in (((), {"CLOUDLAND_TOKEN": "forged"}), (("--token", "forged"), None)):
        result = invoke(*args, "flavor", "list", env=env)
        assert result.exit_code == 3, result.output
        assert "not logged in: unknown token" in result.stderr and "clctl login" in result.stderr


# Resources: tables, records and JSON ----------------------------------------------------------


@pytest.fixture
def pubkey(tmp_path: Path) -> Path:
    path = tmp_path / "id.pub"
    path.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8oVb0k7nXh1k7JfF6QY3J2m4bGvT3Q0C3bX2m1Bz0 me@host\n")
    return path


#: group -> (collection, setup commands, create command, headers, how show and delete name it)
SCENARIOS: dict[str, tuple[str, list[list[str]], list[str], list[str], str]] = {
    "org": ("orgs", [], ["org", "create", "acme", "--quota", "instances=10", "--quota", "vcpus=unlimited"],
            ["ID", "NAME", "STATUS", "INSTANCES", "VCPUS", "MEMORY_MB", "VOLUME_GB", "CREATED"], "id"),
    "user": ("users", [], ["user", "create", "bob", "--role", "member", "--password-stdin"],
             ["ID", "NAME", "ROLE", "STATUS", "ORG", "CREATED"], "id"),
    "flavor": ("flavors", [], ["flavor", "create", "small", "--vcpus", "2", "--memory-mb", "2048", "--disk-gb", "20"],
               ["ID", "NAME", "VCPUS", "MEMORY_MB", "DISK_GB", "PUBLIC"], "name"),
    "zone": ("zones", [], ["zone", "create", "z1"], ["ID", "NAME", "STATUS", "CREATED"], "id"),
    "network": ("networks", [], ["network", "create", "net1"], ["ID", "NAME", "STATUS", "EXTERNAL", "CREATED"],
                "name"),
    "subnet": ("subnets", [["network", "create", "net1"]],
               ["subnet", "create", "sub1", "--network", "net1", "--cidr", "10.0.0.0/24", "--dns", "10.0.0.53"],
               ["ID", "NAME", "NETWORK", "CIDR", "GATEWAY", "DHCP", "DNS", "VNI", "POOLS"], "name"),
    "keypair": ("keypairs", [], ["keypair", "create", "me", "--public-key-file", "PUBKEY"],
                ["ID", "NAME", "FINGERPRINT", "CREATED"], "name"),
    "image": ("images", [], ["image", "create", "cirros", "--format", "qcow2"],
              ["ID", "NAME", "STATUS", "FORMAT", "SIZE", "PUBLIC", "CREATED"], "name"),
    "server-group": ("server-groups", [], ["server-group", "create", "web"],
                     ["ID", "NAME", "POLICY", "MEMBERS", "CREATED"], "name"),
    "sg": ("security-groups", [], ["sg", "create", "web", "--description", "web-servers"],
           ["ID", "NAME", "DESCRIPTION", "RULES"], "name"),
    "router": ("routers", [["network", "create", "net1"]], ["router", "create", "r1", "--network", "net1"],
               ["ID", "NAME", "STATUS", "NETWORK", "SNAT"], "name"),
}


def skip_unless_served(app: FastAPI, admin: str, collection: str) -> None:
    """Skip a group whose endpoints are not in the API yet (FastAPI's own 404, not the API's)."""
    response = TestClient(app).get(f"/v1/{collection}", headers={"Authorization": f"Bearer {admin}"})
    if response.status_code == 404 and response.json() == {"detail": "Not Found"}:
        pytest.skip(f"/v1/{collection} is not in the API yet")


@pytest.mark.parametrize("group", list(SCENARIOS))
def test_create_list_show_delete(group: str, app: FastAPI, admin: str, pubkey: Path) -> None:
    collection, setup, create, headers, ref_by = SCENARIOS[group]
    skip_unless_served(app, admin, collection)
    for command in setup:
        assert invoke(*command).exit_code == 0
    name = create[2]
    result = invoke(*[str(pubkey) if a == "PUBKEY" else a for a in create], input="long-enough\nlong-enough\n")
    assert result.exit_code == 0, result.output
    created = record(result.stdout)
    assert created["name"] == name

    result = invoke(group, "list")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert rows[0] == headers
    assert any(name in row for row in rows[1:])

    listed = json.loads(invoke(group, "list", "--json").stdout)
    assert set(listed) == {"items"}
    item = next(i for i in listed["items"] if i["name"] == name)
    assert item["id"] == created["id"]
    ref = item[ref_by]
    if group != "zone":  # zones have no show
        shown = json.loads(invoke("--json", group, "show", ref).stdout)
        assert shown == item

    result = invoke(group, "delete", ref)
    assert result.exit_code == 0, result.output
    if group == "router":  # its hosts are told by a task, which the output names
        assert "(network.sync) is pending" in result.stdout
    else:
        assert result.stdout.startswith("deleted ") and result.stdout.endswith(f" {ref}\n")
    assert name not in [i["name"] for i in json.loads(invoke(group, "list", "--json").stdout)["items"]]


def test_org_quotas_usage_and_update(admin: str) -> None:
    org = json.loads(invoke("org", "create", "acme", "--quota", "instances=10", "--json").stdout)
    assert org["quotas"]["instances"] == 10 and org["quotas"]["vcpus"] is None
    row = next(r for r in table_rows(invoke("org", "list").stdout) if r[1] == "acme")
    assert row[3:5] == ["0/10", "0"]  # used/quota; no quota: just what is used
    result = invoke("org", "update", org["id"], "--quota", "vcpus=8", "--quota", "instances=unlimited", "--disable")
    assert result.exit_code == 0, result.output
    updated = json.loads(invoke("org", "show", org["id"], "--json").stdout)
    assert updated["status"] == "disabled" and updated["quotas"]["vcpus"] == 8
    assert updated["quotas"]["instances"] is None
    assert "quotas.vcpus" in invoke("org", "show", org["id"]).stdout  # nested maps flattened for people
    result = invoke("org", "update", org["id"])
    assert result.exit_code == 2 and "nothing to change" in result.stderr
    result = invoke("org", "create", "x", "--quota", "instances=lots")
    assert result.exit_code == 2 and "--quota" in result.stderr


def test_image_upload(app: FastAPI, admin: str, tmp_path: Path) -> None:
    skip_unless_served(app, admin, "images")
    disk = tmp_path / "tiny.qcow2"
    disk.write_bytes(fake_qcow2(virtual_size=3 << 30, length=32) + os.urandom(2 * (1 << 20)))
    result = invoke("image", "create", "tiny", "--format", "qcow2", "--file", str(disk), "--json")
    assert result.exit_code == 0, result.output
    image = json.loads(result.stdout)
    assert image["status"] == "active" and image["size_bytes"] == disk.stat().st_size
    assert image["min_disk_gb"] == 3
    result = invoke("image", "upload", "tiny", str(disk))
    assert result.exit_code == 1 and "only a queued image takes a file" in result.stderr


def test_security_group_rules(app: FastAPI, admin: str) -> None:
    skip_unless_served(app, admin, "security-groups")
    before = len(json.loads(invoke("sg", "create", "web", "--json").stdout)["rules"])
    result = invoke("sg", "rule-add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "22",
                    "--remote-cidr", "10.0.0.0/8")
    assert result.exit_code == 0, result.output
    rule = table_rows(result.stdout)[1]
    assert rule[1:] == ["ingress", "tcp", "22", "10.0.0.0/8"]
    shown = invoke("sg", "show", "web").stdout
    assert rule in table_rows(shown) and "rules[0].id" not in shown  # a table under the record, not in it
    assert next(r for r in table_rows(invoke("sg", "list").stdout) if r[1] == "web")[-1] == str(before + 1)
    result = invoke("sg", "rule-add", "web", "--direction", "ingress", "--protocol", "icmp", "--port", "22")
    assert result.exit_code == 1 and "port_min" in result.stderr  # the API's refusal, naming its field
    result = invoke("sg", "rule-add", "web", "--direction", "ingress", "--protocol", "1", "--icmp-type", "8")
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout)[1][1:] == ["ingress", "icmp", "8", "0.0.0.0/0"]
    result = invoke("sg", "rule-add", "web", "--direction", "ingress", "--protocol", "300")
    assert result.exit_code == 2 and "IP protocol number" in result.stderr
    assert invoke("sg", "rule-delete", "web", table_rows(invoke("sg", "show", "web").stdout)[-1][0]).exit_code == 0
    assert invoke("sg", "rule-delete", "web", rule[0]).exit_code == 0
    assert len(json.loads(invoke("sg", "show", "web", "--json").stdout)["rules"]) == before


def test_subnet_pools(admin: str) -> None:
    assert invoke("network", "create", "net1").exit_code == 0
    result = invoke("subnet", "create", "sub1", "--network", "net1", "--cidr", "10.0.0.0/24",
                    "--pool", "10.0.0.200-10.0.0.250", "--pool", " 10.0.0.20 - 10.0.0.30 ")
    assert result.exit_code == 0, result.output
    shown = record(invoke("subnet", "show", "sub1").stdout)
    assert (shown["allocation_pools[0].start"], shown["allocation_pools[1].end"]) == ("10.0.0.20", "10.0.0.250")
    listed = invoke("subnet", "list").stdout
    assert listed.splitlines()[1].endswith("  10.0.0.20-10.0.0.30, 10.0.0.200-10.0.0.250")
    for bad in ("10.0.0.5", "10.0.0.5-", "10.0.0.5-10.0.0.9-10.0.0.12", "10.0.0.5-ten"):
        result = invoke("subnet", "create", "sub2", "--network", "net1", "--cidr", "10.0.1.0/24", "--pool", bad)
        assert result.exit_code == 2 and "is not a range of IPv4 addresses" in result.stderr, bad
    result = invoke("subnet", "create", "sub2", "--network", "net1", "--cidr", "10.0.1.0/24",
                    "--pool", "10.0.1.1-10.0.1.9")
    assert result.exit_code == 1 and "allocation_pools[0]: holds the gateway 10.0.1.1" in result.stderr


def test_user_update(admin: str) -> None:
    bob = json.loads(invoke("user", "create", "bob", "--password-stdin", "--json", input="long-enough\n").stdout)
    result = invoke("user", "update", bob["id"], "--role", "reader", "--password-stdin", input="another-one\n")
    assert result.exit_code == 0, result.output
    assert json.loads(invoke("user", "show", bob["id"], "--json").stdout)["role"] == "reader"


def test_hypervisors(frontend: Frontend, admin: str) -> None:
    result = invoke("hypervisor", "list")
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout) == [["NAME", "STATUS", "ZONE", "ENABLED", "VCPUS", "MEMORY_GIB", "DISK_GB",
                                          "INSTANCES", "HEARTBEAT", "LOAD"]]
    assert json.loads(invoke("hypervisor", "list", "--json").stdout) == {"items": []}

    org_id = json.loads(invoke("whoami", "--json").stdout)["org_id"]
    with frontend.db.transaction() as session:
        for name, used, load in (("host000", 6, 0.5), ("host001", 2, 3.25)):
            session.add(Hypervisor(org_id=org_id, name=name, status="up", vcpus=8, vcpus_used=used,
                                   memory_mb=16384, memory_mb_used=4096, disk_gb=500, disk_gb_used=20,
                                   last_seen_at=utcnow(), facts={"load": [load, 0.1, 0.1]}))
    rows = table_rows(invoke("hypervisor", "list").stdout)[1:]
    assert [r[0] for r in rows] == ["host000", "host001"]
    assert rows[0][1:8] == ["up", "-", "yes", "6/8", "4.0/16.0", "20/500", "0"]
    assert rows[0][8] == "-"  # no tree in this test, so no heartbeat to report
    assert [r[9] for r in rows] == ["0.50", "3.25"]
    busiest = table_rows(invoke("hypervisor", "list", "--sort", "load", "--reverse").stdout)[1:]
    assert [r[0] for r in busiest] == ["host001", "host000"]
    by_load = table_rows(invoke("hypervisor", "list", "--sort", "vcpus").stdout)[1:]
    assert [r[0] for r in by_load] == ["host001", "host000"]
    by_load = table_rows(invoke("hypervisor", "list", "--sort", "vcpus", "--reverse").stdout)[1:]
    assert [r[0] for r in by_load] == ["host000", "host001"]
    assert invoke("hypervisor", "list", "--sort", "nosuch").exit_code == 2

    result = invoke("hypervisor", "disable", "host001")
    assert result.exit_code == 0, result.output
    assert record(result.stdout)["enabled"] == "no"
    assert json.loads(invoke("hypervisor", "show", "host001", "--json").stdout)["enabled"] is False
    assert json.loads(invoke("hypervisor", "enable", "host001", "--json").stdout)["enabled"] is True


# Errors -------------------------------------------------------------------------------------


def test_invalid_field_exits_1_naming_the_field(admin: str) -> None:
    result = invoke("flavor", "create", "tiny", "--vcpus", "1", "--memory-mb", "1", "--disk-gb", "1")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: memory_mb: ") and "[invalid]" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


def test_conflict_and_not_found_exit_1(admin: str) -> None:
    args = ["flavor", "create", "small", "--vcpus", "1", "--memory-mb", "512", "--disk-gb", "1"]
    assert invoke(*args).exit_code == 0
    result = invoke(*args)
    assert result.exit_code == 1 and "exists already" in result.stderr and "[conflict]" in result.stderr
    result = invoke("flavor", "show", "nosuch")
    assert result.exit_code == 1 and "no flavor 'nosuch'" in result.stderr


def test_no_token_exits_3(endpoints: list[str]) -> None:
    result = invoke("flavor", "list")
    assert result.exit_code == 3
    assert "not logged in" in result.stderr and result.stdout == ""
    assert endpoints == []  # nothing is sent without a token


def test_unreachable_endpoint_exits_3() -> None:
    with socket.socket() as s:  # a port nobody listens on: bind one, then let it go
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = invoke("--endpoint", f"http://127.0.0.1:{port}", "--token", "t", "flavor", "list")
    assert result.exit_code == 3
    assert f"cannot reach the API at http://127.0.0.1:{port}" in result.stderr and "Traceback" not in result.output
    assert "saved by 'clctl login'" not in result.stderr  # the token was not the saved one


def _closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on: bind one, then let it go
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_saved_login_whose_cloud_is_gone_says_so(home: Path) -> None:
    """After `make clean` the saved token's cloud answers no more: clctl says whose token it is and what to do."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    path = config_path(home)
    path.parent.mkdir(parents=True)
    path.write_text(f"endpoint: {endpoint}\ntoken: t\n")
    result = invoke("flavor", "list")
    assert result.exit_code == 3
    assert f"cannot reach the API at {endpoint}" in result.stderr
    assert (f"The token saved by 'clctl login' (in {path}) belongs to the cloud at {endpoint}, which no longer "
            "answers there") in " ".join(result.stderr.split())
    assert "clctl login --endpoint URL" in result.stderr
    # A token given in the environment is not the saved login's: only the connection error.
    result = invoke("flavor", "list", env={"CLOUDLAND_TOKEN": "other"})
    assert result.exit_code == 3 and "saved by 'clctl login'" not in result.stderr


def test_a_saved_login_whose_ca_file_is_gone_says_so(home: Path, tmp_path: Path) -> None:
    """`make clean` takes the cloud's generated certificate with it: that, too, means the saved token's cloud is gone."""
    gone = tmp_path / "run" / "frontend" / "tls" / "api.crt"
    path = config_path(home)
    path.parent.mkdir(parents=True)
    path.write_text(f"endpoint: https://127.0.0.1:{_closed_port()}\ntoken: t\nca_file: {gone}\n")
    result = invoke("flavor", "list")
    assert result.exit_code == 3
    message = " ".join(result.stderr.split())
    assert f"The token saved by 'clctl login' (in {path}) belongs to the cloud at https://127.0.0.1:" in message
    assert f"whose certificate file {gone}, saved with the token, is gone: so is that cloud, most likely" in message
    assert "clctl login --endpoint URL" in message


def test_unusable_endpoint_and_config(home: Path) -> None:
    result = invoke("--endpoint", "cloud:8080", "--token", "t", "flavor", "list")
    assert result.exit_code == 3 and "http:// or https://" in result.stderr
    path = config_path(home)
    path.parent.mkdir(parents=True)
    path.write_text("token: [unclosed\n")
    result = invoke("flavor", "list")
    assert result.exit_code == 2 and "not valid YAML" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert invoke("flavor", "create", "x", "--vcpus", "1").exit_code == 2
    assert invoke("nosuch").exit_code == 2
    result = invoke("--token", "t", "port", "create", "--network", "n", "--subnet", "s")
    assert result.exit_code == 2 and "exactly one of --network or --subnet" in result.stderr
    result = invoke("instance", "create", "vm", "--flavor", "f", "--image", "i", "--nic", "network=a,subnet=b")
    assert result.exit_code == 2 and "exactly one of network=, subnet= or port=" in result.stderr
    result = invoke("sg", "rule-add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "22",
                    "--ports", "1-2")
    assert result.exit_code == 2 and "--port or --ports" in result.stderr


def test_help_documents_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for code in ("0  success", "1  the API refused", "2  usage error", "3  cannot reach the API"):
        assert code in result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script(shell: str) -> None:
    result = invoke("completion", shell)
    assert result.exit_code == 0, result.output
    assert "_CLCTL_COMPLETE" in result.stdout and "complete" in result.stdout


def complete(words: str) -> list[str]:
    env = {"_CLCTL_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    result = invoke(env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.split()


def test_names_complete_from_the_api(admin: str) -> None:
    for name in ("small", "smaller", "large"):
        assert invoke("flavor", "create", name, "--vcpus", "1", "--memory-mb", "512", "--disk-gb", "1").exit_code == 0
    assert complete("clctl flavor show sma") == ["plain,small", "plain,smaller"]
    assert complete("clctl --endpoint ftp://nowhere flavor show sma") == []  # quietly nothing


def test_clctl_imports_no_server_code() -> None:
    code = ("import sys, clctl.main; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('frontend', 'sci', 'backend', 'agent', 'service', 'zmq', 'sqlalchemy', 'fastapi')); print(bad)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# Against a scripted API: tasks, the tree --------------------------------------------------------


class ScriptedApi:
    """Answers from a table of (method, path) -> handler; remembers every request."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[httpx.Request], Any]]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.raw_path.decode().partition("?")[0]))
        if handler is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        answer = handler(request)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def bodies(self, method: str, path: str) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests
                if r.method == method and r.url.raw_path.decode().partition("?")[0] == path]


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ScriptedApi]:
    monkeypatch.setenv("CLOUDLAND_TOKEN", "t0k")
    monkeypatch.setattr(clctl.tasks, "FIRST_POLL_S", 0.0)

    def install(routes: dict[tuple[str, str], Callable[[httpx.Request], Any]]) -> ScriptedApi:
        fake = ScriptedApi(routes)
        monkeypatch.setattr(clctl.client, "http_client", lambda endpoint, timeout, ca_file: httpx.Client(
            base_url=endpoint, transport=httpx.MockTransport(fake)))
        return fake

    return install


def task(status: str, steps: int = 0, error: str | None = None) -> dict[str, Any]:
    return {"id": "task-1", "kind": "instance.create", "status": status, "resource_type": "instance",
            "resource_id": "vm-1", "error": error, "created_at": "2024-05-01T12:00:00",
            "finished_at": "2024-05-01T12:00:09" if status in ("succeeded", "failed") else None,
            "steps": [{"seq": i + 1, "name": ["place", "boot"][i], "op": [None, "vm.create"][i], "status": "done",
                       "hosts": [[], ["host003"]][i],
                       "result": [{}, {"host003": {"status": "error" if error else "ok", "message": error or "",
                                                    "exit_status": 1 if error else 0}}][i]}
                      for i in range(steps)]}


def instance_routes(final: dict[str, Any]) -> dict[tuple[str, str], Callable[[httpx.Request], Any]]:
    polls = iter([task("running", 1), task("running", 2), final])
    vm = {"id": "vm-1", "name": "web1", "status": "active", "power_state": "running"}
    return {
        ("POST", "/v1/instances"): lambda r: httpx.Response(202, json={"task": task("pending"),
                                                                       "resource": {**vm, "status": "building"}}),
        ("GET", "/v1/tasks/task-1"): lambda r: next(polls),
        ("GET", "/v1/instances/vm-1"): lambda r: vm,
    }


def test_instance_create_sends_the_spec_body(scripted: Callable[..., ScriptedApi], tmp_path: Path) -> None:
    fake = scripted(instance_routes(task("succeeded", 2)))
    user_data = tmp_path / "cloud-init.yaml"
    user_data.write_text("#cloud-config\n")
    result = invoke("instance", "create", "web1", "--flavor", "small", "--image", "cirros", "--keypair", "me",
                    "--user-data-file", str(user_data), "--nic", "network=net1", "--nic", "port=p1,ip=10.0.0.5",
                    "--security-group", "web", "--security-group", "ssh", "--server-group", "g", "--zone", "z1")
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/v1/instances") == [{
        "name": "web1", "flavor": "small", "image": "cirros", "keypair": "me", "user_data": "#cloud-config\n",
        "nics": [{"network": "net1"}, {"port": "p1", "ip": "10.0.0.5"}], "security_groups": ["web", "ssh"],
        "server_group": "g", "zone": "z1"}]
    assert fake.requests[0].headers["Authorization"] == "Bearer t0k"
    # Not waiting: the resource as it was accepted, and how to follow its task.
    assert record(result.stdout)["status"] == "building" and "clctl task show task-1" in result.stdout
    assert not fake.bodies("GET", "/v1/tasks/task-1")


def test_wait_follows_the_task_then_prints_the_resource(scripted: Callable[..., ScriptedApi]) -> None:
    fake = scripted(instance_routes(task("succeeded", 2)))
    result = invoke("instance", "create", "web1", "--flavor", "small", "--image", "cirros", "--wait")
    assert result.exit_code == 0, result.output
    assert len(fake.bodies("GET", "/v1/tasks/task-1")) == 3
    progress = result.stderr.splitlines()
    assert progress[0] == "task task-1 instance.create: pending"
    assert "step 2 boot (done) on host003" in progress[2]
    assert progress[-1].startswith("task task-1 instance.create: succeeded")
    assert record(result.stdout)["status"] == "active"

    fake = scripted(instance_routes(task("succeeded", 2)))
    result = invoke("instance", "create", "web1", "--flavor", "small", "--image", "cirros", "--wait", "--json")
    assert json.loads(result.stdout)["power_state"] == "running"  # stdout is only the final JSON


def test_wait_on_a_failed_task_exits_1_with_its_error(scripted: Callable[..., ScriptedApi]) -> None:
    scripted(instance_routes(task("failed", 2, error="qemu-img: disk full")))
    result = invoke("instance", "create", "web1", "--flavor", "small", "--image", "cirros", "--wait")
    assert result.exit_code == 1
    assert "task task-1 (instance.create) failed" in result.stderr and "qemu-img: disk full" in result.stderr
    # what each host answered, for the operator
    assert any(line.split()[:3] == ["host003", "error", "exit"] for line in result.stdout.splitlines())


def test_actions_and_delete_with_wait(scripted: Callable[..., ScriptedApi]) -> None:
    accepted = {"task": {**task("succeeded"), "kind": "instance.delete"}}
    fake = scripted({
        ("POST", "/v1/instances/web%201/reboot"): lambda r: httpx.Response(202, json=accepted),
        ("POST", "/v1/instances/web1/resize"): lambda r: httpx.Response(202, json=accepted),
        ("DELETE", "/v1/instances/web1"): lambda r: httpx.Response(202, json=accepted),
    })
    assert invoke("instance", "reboot", "web 1", "--wait").exit_code == 0  # names are quoted into one segment
    assert invoke("instance", "resize", "web1", "--flavor", "large").exit_code == 0
    assert fake.bodies("POST", "/v1/instances/web1/resize") == [{"flavor": "large"}]
    result = invoke("instance", "delete", "web1", "--wait")
    assert result.exit_code == 0, result.output
    assert record(result.stdout)["kind"] == "instance.delete"  # the task, as there is no instance to show


def test_instance_image_follows_its_task_then_shows_the_image(scripted: Callable[..., ScriptedApi]) -> None:
    image = {"id": "img-1", "name": "web-img", "status": "queued", "format": "qcow2", "source_instance_id": "vm-1"}
    done = {**task("succeeded"), "kind": "image.create", "resource_type": "image", "resource_id": "img-1"}
    fake = scripted({
        ("POST", "/v1/instances/web1/image"): lambda r: httpx.Response(202, json={"task": task("pending"),
                                                                                   "resource": image}),
        ("GET", "/v1/tasks/task-1"): lambda r: done,
        ("GET", "/v1/images/img-1"): lambda r: {**image, "status": "active"},
    })
    result = invoke("instance", "image", "web1", "web-img", "--wait")
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/v1/instances/web1/image") == [{"name": "web-img"}]
    assert record(result.stdout)["status"] == "active" and record(result.stdout)["source_instance_id"] == "vm-1"
    assert "Stop the instance first" in invoke("instance", "image", "--help").output


def test_volume_create_from_a_snapshot_and_snapshot_commands(scripted: Callable[..., ScriptedApi]) -> None:
    volume = {"id": "v-1", "name": "copy", "status": "in-use", "size_gb": 2, "hypervisor": "host-0123456789",
              "instance_id": "vm-1", "attachment": {"instance_id": "vm-1", "instance": "web1", "device": "vdc"}}
    snapshot = {"id": "s-1", "name": "monday", "status": "available", "size_gb": 2, "volume_id": "v-0",
                "consistency": "crash-consistent", "hypervisor": "host-0123456789"}
    fake = scripted({
        ("POST", "/v1/volumes"): lambda r: httpx.Response(202, json={"task": task("pending"), "resource": volume}),
        ("GET", "/v1/volumes"): lambda r: {"items": [volume]},
        ("POST", "/v1/snapshots"): lambda r: httpx.Response(202, json={"task": task("pending"), "resource": snapshot}),
        ("GET", "/v1/snapshots"): lambda r: {"items": [snapshot]},
    })
    assert invoke("volume", "create", "copy", "--snapshot", "monday", "--instance", "web1").exit_code == 0
    assert fake.bodies("POST", "/v1/volumes") == [{"name": "copy", "snapshot": "monday", "instance": "web1"}]
    result = invoke("volume", "create", "empty")
    assert result.exit_code == 2 and "--size-gb is required unless --snapshot is given" in result.output
    rows = table_rows(invoke("volume", "list").stdout)
    assert rows[0][:7] == ["ID", "NAME", "STATUS", "SIZE_GB", "INSTANCE", "DEVICE", "HYPERVISOR"]
    assert rows[1][:7] == ["v-1", "copy", "in-use", "2", "web1", "vdc", "host-0123456789"]

    assert invoke("snapshot", "create", "monday", "--volume", "data").exit_code == 0
    assert fake.bodies("POST", "/v1/snapshots") == [{"name": "monday", "volume": "data"}]
    result = invoke("snapshot", "list", "--volume", "data")
    assert [r.url.params.get("volume") for r in fake.requests if r.url.path == "/v1/snapshots"][-1] == "data"
    rows = table_rows(result.stdout)
    assert rows[1][:6] == ["s-1", "monday", "available", "2", "v-0", "crash-consistent"]


def test_task_show_prints_steps_and_hosts(scripted: Callable[..., ScriptedApi]) -> None:
    scripted({("GET", "/v1/tasks/task-1"): lambda r: task("failed", 2, error="qemu-img: disk full"),
              ("GET", "/v1/tasks"): lambda r: {"items": [task("failed", 2, error="boom")]}})
    result = invoke("task", "show", "task-1")
    assert result.exit_code == 0, result.output
    assert "step 2 boot (vm.create on host003): done" in result.stdout
    assert "qemu-img: disk full" in result.stdout
    rows = table_rows(invoke("task", "list", "--status", "failed").stdout)
    assert rows[0] == ["ID", "KIND", "STATUS", "RESOURCE", "CREATED", "FINISHED", "ERROR"]
    assert rows[1][:3] == ["task-1", "instance.create", "failed"]


def test_list_filters_become_query_parameters(scripted: Callable[..., ScriptedApi]) -> None:
    fake = scripted({("GET", "/v1/events"): lambda r: {"items": []}, ("GET", "/v1/subnets"): lambda r: {"items": []},
                     ("GET", "/v1/tasks"): lambda r: {"items": []}})
    assert invoke("event", "list", "--kind", "host_down", "--since", "2024-05-01T12:00").exit_code == 0
    assert invoke("subnet", "list", "--network", "net1").exit_code == 0
    assert invoke("task", "list", "--resource", "vm-1").exit_code == 0
    queries = [dict(r.url.params) for r in fake.requests]
    assert queries == [{"kind": "host_down", "since": "2024-05-01T12:00:00+00:00"}, {"network": "net1"},
                       {"resource": "vm-1"}]
    assert invoke("event", "list", "--since", "yesterday").exit_code == 2


def test_image_create_streams_the_file(scripted: Callable[..., ScriptedApi], tmp_path: Path) -> None:
    disk = tmp_path / "cirros.qcow2"
    disk.write_bytes(os.urandom(3 * (1 << 20) + 5))
    image = {"id": "img-1", "name": "cirros", "status": "queued", "format": "qcow2"}
    fake = scripted({("POST", "/v1/images"): lambda r: httpx.Response(201, json=image),
                     ("PUT", "/v1/images/img-1/file"): lambda r: {**image, "status": "active",
                                                                   "size_bytes": len(r.content)}})
    result = invoke("image", "create", "cirros", "--format", "qcow2", "--file", str(disk), "--public")
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/v1/images") == [{"name": "cirros", "format": "qcow2", "public": True}]
    put = fake.requests[1]
    assert put.content == disk.read_bytes() and put.headers["Content-Length"] == str(disk.stat().st_size)
    assert record(result.stdout)["status"] == "active"


def test_flavor_and_image_take_one_pair_of_visibility_flags(scripted: Callable[..., ScriptedApi]) -> None:
    fake = scripted({("POST", "/v1/flavors"): lambda r: httpx.Response(201, json={"id": "f1", **json.loads(r.content)}),
                     ("POST", "/v1/images"): lambda r: httpx.Response(201, json={"id": "i1", **json.loads(r.content)})})
    flavor = ["flavor", "create", "small", "--vcpus", "1", "--memory-mb", "64", "--disk-gb", "1"]
    image = ["image", "create", "img", "--format", "raw"]
    for flags in ([], ["--public"], ["--private"]):
        assert invoke(*flavor, *flags).exit_code == 0
        assert invoke(*image, *flags).exit_code == 0
    # Flavors are for everyone unless said otherwise, images for their organization.
    assert [b["public"] for b in fake.bodies("POST", "/v1/flavors")] == [True, True, False]
    assert [b["public"] for b in fake.bodies("POST", "/v1/images")] == [False, True, False]
    for command, default in ((flavor[:2], "public"), (image[:2], "private")):
        shown = invoke(*command, "--help").stdout
        assert "--public / --private" in shown and f"[default: {default}]" in shown, shown
    assert invoke(*image, "--min-memory-mb", "512").exit_code == 0
    assert fake.bodies("POST", "/v1/images")[-1] == {"name": "img", "format": "raw", "public": False,
                                                      "min_memory_mb": 512}


def test_security_group_rules_and_floating_ips(scripted: Callable[..., ScriptedApi]) -> None:
    rule = {"id": "r1", "direction": "ingress", "protocol": "tcp", "port_min": 1000, "port_max": 2000,
            "remote_cidr": "10.0.0.0/8"}
    fake = scripted({
        ("POST", "/v1/security-groups/web/rules"): lambda r: httpx.Response(201, json=rule),
        ("DELETE", "/v1/security-groups/web/rules/r1"): lambda r: httpx.Response(204),
        ("GET", "/v1/security-groups/web"): lambda r: {"id": "sg1", "name": "web", "rules": [rule]},
        ("PATCH", "/v1/floating-ips/203.0.113.7"): lambda r: {"id": "f1", "address": "203.0.113.7"},
    })
    result = invoke("sg", "rule-add", "web", "--direction", "ingress", "--protocol", "tcp", "--ports", "1000-2000",
                    "--remote-cidr", "10.0.0.0/8")
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/v1/security-groups/web/rules") == [
        {"direction": "ingress", "protocol": "tcp", "port_min": 1000, "port_max": 2000, "remote_cidr": "10.0.0.0/8"}]
    assert table_rows(result.stdout)[1] == ["r1", "ingress", "tcp", "1000-2000", "10.0.0.0/8"]
    shown = invoke("sg", "show", "web").stdout
    assert "1000-2000" in shown  # the rules under the group's record
    assert invoke("sg", "rule-delete", "web", "r1").stdout == "deleted rule r1 of security group web\n"
    assert invoke("fip", "associate", "203.0.113.7", "port1").exit_code == 0
    assert invoke("fip", "disassociate", "203.0.113.7").exit_code == 0
    assert fake.bodies("PATCH", "/v1/floating-ips/203.0.113.7") == [{"port": "port1"}, {"port": None}]


TREE = {"fanout": 2, "nodes": [
    {"node_id": "root", "role": "root", "parent": None, "level": 0, "children": 2, "heartbeat_age": None,
     "state": "up"},
    {"node_id": "agent0", "role": "agent", "parent": "root", "level": 1, "children": 3, "heartbeat_age": 0.4,
     "state": "up"},
    {"node_id": "agent1", "role": "agent", "parent": "root", "level": 1, "children": 0, "heartbeat_age": 0.3,
     "state": "silent"},
    {"node_id": "host001", "role": "backend", "parent": "agent0", "level": 2, "children": 0, "heartbeat_age": 2.5,
     "state": "suspect"},
    {"node_id": "host000", "role": "backend", "parent": None, "level": 2, "children": 0, "heartbeat_age": 75.0,
     "state": "down"},
]}


def test_tree_is_indented_and_marks_trouble(scripted: Callable[..., ScriptedApi]) -> None:
    scripted({("GET", "/v1/tree"): lambda r: TREE})
    result = invoke("tree")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NODE", "ROLE", "PARENT", "CHILDREN", "HEARTBEAT", "STATE"]
    assert [line.split()[0] for line in lines[1:6]] == ["root", "agent0", "host001", "agent1", "host000"]
    assert lines[3].startswith("    host001") and lines[4].startswith("  agent1")
    assert lines[3].endswith("SUSPECT ?")
    assert lines[4].endswith("SILENT !") and lines[5].endswith("DOWN !") and "1m15s" in lines[5]
    assert lines[1].split()[3] == "2/2" and lines[2].split()[3:5] == ["3/2", "!"]  # relays against the fan-out
    assert lines[3].split()[3] == "0" and lines[4].split()[3] == "0/2"
    assert lines[-2] == "5 nodes: down 1, silent 1, suspect 1, up 2"
    assert lines[-1].startswith("1 above the fan-out of 2 (marked '!')")
    assert json.loads(invoke("tree", "--json").stdout) == TREE


def test_ping_exits_1_when_a_host_fails(scripted: Callable[..., ScriptedApi]) -> None:
    answers = {"host000": {"status": "ok", "message": "", "latency_s": 0.0021},
               "host001": {"status": "unreachable", "message": "no route", "latency_s": None}}
    fake = scripted({("POST", "/v1/tree/ping"): lambda r: {"results": {
        h: answers[h] for h in json.loads(r.content)["hosts"] or answers}}})
    result = invoke("ping")
    assert result.exit_code == 1
    assert table_rows(result.stdout)[1:3] == [["host000", "ok", "2.1"], ["host001", "unreachable", "-", "no", "route"]]
    assert result.stdout.splitlines()[-1] == "1 ok, 1 failed; latency p50 2.1 ms, max 2.1 ms"
    result = invoke("ping", "host000", "--timeout", "2", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"results": {"host000": answers["host000"]}}
    assert fake.bodies("POST", "/v1/tree/ping") == [{"hosts": [], "group": None, "timeout": 5.0},
                                                    {"hosts": ["host000"], "group": None, "timeout": 2.0}]
    assert invoke("ping", "host000", "--group", "rack1").exit_code == 2


def test_event_list_oldest_first_and_follow(frontend: Frontend, admin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from clctl.commands import event as event_command
    from frontend.db.models import Event

    org_id = json.loads(invoke("whoami", "--json").stdout)["org_id"]

    def add(kind: str, host: str) -> None:
        with frontend.db.transaction() as session:
            session.add(Event(org_id=org_id, kind=kind, host=host, message=f"{host} {kind}"))

    add("host.down", "hv1")
    add("host.up", "hv1")
    listed = json.loads(invoke("event", "list", "--json").stdout)["items"]
    assert [e["kind"] for e in listed] == ["host.down", "host.up"]

    polls = iter([lambda: add("drift.vanished", "hv2"), lambda: None])

    def next_poll(_seconds: float) -> None:
        step = next(polls, None)
        if step is None:
            raise KeyboardInterrupt
        step()

    monkeypatch.setattr(event_command.time, "sleep", next_poll)
    followed = invoke("event", "list", "--follow", "--json")
    lines = [json.loads(line) for line in followed.stdout.splitlines() if line.startswith("{")]
    assert [e["kind"] for e in lines] == ["host.down", "host.up", "drift.vanished"]  # each once
