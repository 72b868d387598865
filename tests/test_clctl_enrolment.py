"""``clctl hypervisor enroll / enrolments / revoke`` against a scripted API."""

from __future__ import annotations

from typing import Callable

import httpx

from tests.test_clctl import ScriptedApi, home, invoke, scripted, table_rows  # noqa: F401  (fixtures)

TOKEN = "cl1.c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA.rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
ISSUED = {"id": "e1", "name": "hv7", "role": "backend", "token": TOKEN, "expires_at": "2024-05-01T13:00:00",
          "registrar": "tcp://controller.example:7700"}


def test_enroll_prints_the_token_and_the_config_lines(scripted: Callable[..., ScriptedApi]) -> None:
    fake = scripted({("POST", "/v1/hypervisors/enrolments"): lambda r: httpx.Response(201, json=ISSUED)})
    result = invoke("hypervisor", "enroll", "hv7")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert TOKEN in lines
    assert "frontend: tcp://controller.example:7700" in lines
    assert "enrolment_token_file: /etc/cloudland/enrolment-token" in lines
    assert "until 2024-05-01 13:00:00 UTC" in result.stdout and "/etc/cloudland/backend.yaml" in result.stdout
    assert invoke("hypervisor", "enroll", "ag1", "--agent", "--ttl", "2d").exit_code == 0
    assert fake.bodies("POST", "/v1/hypervisors/enrolments") == [
        {"name": "hv7", "role": "backend", "ttl_s": 3600}, {"name": "ag1", "role": "agent", "ttl_s": 172800}]


def test_enroll_refuses_a_ttl_that_is_no_duration(scripted: Callable[..., ScriptedApi]) -> None:
    fake = scripted({})
    result = invoke("hypervisor", "enroll", "hv7", "--ttl", "soon")
    assert result.exit_code == 2 and "'soon' is not a duration like 30m, 1h or 7d" in result.output
    assert not fake.requests


def test_enrolments_are_listed_without_secrets(scripted: Callable[..., ScriptedApi]) -> None:
    listed = [{"id": "e1", "name": "hv7", "role": "backend", "state": "used", "created_at": "2024-05-01T12:00:00",
               "expires_at": "2024-05-01T13:00:00", "used_at": "2024-05-01T12:01:00", "created_by": "u1"}]
    scripted({("GET", "/v1/hypervisors/enrolments"): lambda r: {"items": listed}})
    rows = table_rows(invoke("hypervisor", "enrolments").stdout)
    assert rows[0] == ["NAME", "ROLE", "STATE", "CREATED", "EXPIRES", "USED"]
    assert rows[1][:3] == ["hv7", "backend", "used"]


def test_revoke_says_the_node_is_cut_off(scripted: Callable[..., ScriptedApi]) -> None:
    node = {"name": "hv7", "role": "backend", "public_key": "k", "enrolled_at": "2024-05-01T12:01:00",
            "revoked_at": "2024-05-02T08:00:00"}
    fake = scripted({("POST", "/v1/hypervisors/hv7/revoke"): lambda r: node})
    result = invoke("hypervisor", "revoke", "hv7")
    assert result.exit_code == 0, result.output
    assert "hv7 is cut off from the tree and its key is refused from now on" in result.stdout
    assert [r.url.path for r in fake.requests] == ["/v1/hypervisors/hv7/revoke"]
