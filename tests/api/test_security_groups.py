"""Security groups and their rules through the API: validation, the default group, in-use and isolation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_networks import invalid, items, network, refused


def _rules(group: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(r["direction"], r["protocol"], r["port_min"], r["port_max"], r["remote_cidr"], r["remote_group_id"])
            for r in group["rules"]]


def test_group_create_list_show_update_delete(admin: Api) -> None:
    api = admin.tenant("acme")
    web = api.ok("post", "/v1/security-groups", 201, json={"name": "web", "description": "front ends"})
    assert (web["name"], web["description"], web["status"]) == ("web", "front ends", "active")
    assert _rules(web) == [("egress", "any", None, None, "0.0.0.0/0", None)]
    api.ok("post", "/v1/security-groups", 201, json={"name": "db"})
    assert [g["name"] for g in items(api, "/v1/security-groups")] == ["db", "web"]
    assert api.ok("get", f"/v1/security-groups/{web['id']}") == api.ok("get", "/v1/security-groups/web")
    refused(api.post("/v1/security-groups", json={"name": "web"}), 409, "conflict", "name")
    refused(api.patch("/v1/security-groups/web", json={"name": "db"}), 409, "conflict", "name")
    changed = api.ok("patch", "/v1/security-groups/web", json={"name": "www", "description": "new"})
    assert (changed["id"], changed["name"], changed["description"]) == (web["id"], "www", "new")
    api.ok("delete", "/v1/security-groups/www", 204)
    refused(api.get(f"/v1/security-groups/{web['id']}"), 404, "not_found")
    assert [g["name"] for g in items(api, "/v1/security-groups")] == ["db"]


def test_rules_add_and_remove(admin: Api) -> None:
    api = admin.tenant("acme")
    web = api.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    lb = api.ok("post", "/v1/security-groups", 201, json={"name": "lb"})
    ssh = api.ok("post", "/v1/security-groups/web/rules", 201,
                 json={"direction": "ingress", "protocol": "tcp", "port_min": 22, "remote_cidr": "192.0.2.0/24"})
    assert (ssh["security_group_id"], ssh["port_min"], ssh["port_max"]) == (web["id"], 22, 22)
    api.ok("post", f"/v1/security-groups/{web['id']}/rules", 201,
           json={"direction": "ingress", "protocol": "tcp", "port_min": 8000, "port_max": 8080, "remote_group": "lb"})
    api.ok("post", "/v1/security-groups/web/rules", 201, json={"direction": "ingress", "protocol": "icmp"})
    assert _rules(api.ok("get", "/v1/security-groups/web")) == [
        ("egress", "any", None, None, "0.0.0.0/0", None),
        ("ingress", "tcp", 22, 22, "192.0.2.0/24", None),
        ("ingress", "tcp", 8000, 8080, None, lb["id"]),
        ("ingress", "icmp", None, None, "0.0.0.0/0", None),
    ]
    again = api.post("/v1/security-groups/web/rules",
                     json={"direction": "ingress", "protocol": "tcp", "port_min": 22, "port_max": 22,
                           "remote_cidr": "192.0.2.0/24"})
    assert "already" in refused(again, 409, "conflict")["reason"]
    api.ok("delete", f"/v1/security-groups/web/rules/{ssh['id']}", 204)
    refused(api.delete(f"/v1/security-groups/web/rules/{ssh['id']}"), 404, "not_found")
    refused(api.delete(f"/v1/security-groups/lb/rules/{web['rules'][0]['id']}"), 404, "not_found")
    assert len(api.ok("get", "/v1/security-groups/web")["rules"]) == 3


@pytest.mark.parametrize("rule, field", [
    ({"direction": "sideways"}, "direction"),
    ({"direction": "ingress", "protocol": "sctp"}, "protocol"),
    ({"direction": "ingress", "protocol": "icmp", "port_min": 1}, "port_min"),
    ({"direction": "ingress", "protocol": "any", "port_max": 80}, "port_max"),
    ({"direction": "ingress", "protocol": "tcp", "port_min": 0}, "port_min"),
    ({"direction": "ingress", "protocol": "udp", "port_min": 1, "port_max": 65536}, "port_max"),
    ({"direction": "ingress", "protocol": "tcp", "port_min": 90, "port_max": 80}, "port_max"),
    ({"direction": "ingress", "remote_cidr": "10.0.0.1/24"}, "remote_cidr"),
    ({"direction": "ingress", "remote_cidr": "fd00::/8"}, "remote_cidr"),
    ({"direction": "ingress", "remote_cidr": "everywhere"}, "remote_cidr"),
    ({"direction": "ingress", "remote_cidr": "10.0.0.0/8", "remote_group": "web"}, "remote_group"),
    ({"direction": "ingress", "ports": [22]}, "ports"),
    ({"direction": "ingress", "protocol": 256}, "protocol"),
    ({"direction": "ingress", "protocol": -1}, "protocol"),
    ({"direction": "ingress", "protocol": "6"}, "protocol"),
    ({"direction": "ingress", "protocol": "tcp", "icmp_type": 8}, "icmp_type"),
    ({"direction": "ingress", "protocol": "icmp", "icmp_code": 0}, "icmp_code"),
    ({"direction": "ingress", "protocol": "icmp", "icmp_type": 256}, "icmp_type"),
])
def test_bad_rules_are_refused(admin: Api, rule: dict[str, Any], field: str) -> None:
    api = admin.tenant("acme")
    api.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    refused(api.post("/v1/security-groups/web/rules", json=rule), 422, "invalid", field)
    assert len(api.ok("get", "/v1/security-groups/web")["rules"]) == 1


def test_default_group_is_made_on_first_need_and_kept_while_used(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api)
    assert items(api, "/v1/security-groups") == []
    port = api.ok("post", "/v1/ports", 201, json={"network": "net"})
    default = api.ok("get", "/v1/security-groups/default")
    assert port["security_groups"] == [default["id"]]
    assert sorted(_rules(default), key=str) == sorted([("egress", "any", None, None, "0.0.0.0/0", None),
                                                      ("ingress", "any", None, None, None, default["id"])], key=str)
    second = api.ok("post", "/v1/ports", 201, json={"network": "net"})
    assert second["security_groups"] == [default["id"]] and len(items(api, "/v1/security-groups")) == 1
    assert "used by 2 ports" in refused(api.delete("/v1/security-groups/default"), 409, "conflict")["reason"]
    for p in (port, second):
        api.ok("delete", f"/v1/ports/{p['id']}", 204)
    api.ok("delete", "/v1/security-groups/default", 204)


def test_group_in_use_cannot_be_deleted(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api)
    api.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    api.ok("post", "/v1/security-groups", 201, json={"name": "lb"})
    port = api.ok("post", "/v1/ports", 201, json={"network": "net", "security_groups": ["web"]})
    refused(api.delete("/v1/security-groups/web"), 409, "conflict")
    api.ok("patch", f"/v1/ports/{port['id']}", json={"security_groups": ["lb"]})
    api.ok("post", "/v1/security-groups/lb/rules", 201, json={"direction": "ingress", "remote_group": "web"})
    assert "lb" in refused(api.delete("/v1/security-groups/web"), 409, "conflict")["reason"]
    api.ok("post", "/v1/security-groups/web/rules", 201, json={"direction": "ingress", "remote_group": "web"})
    rule = api.ok("get", "/v1/security-groups/lb")["rules"][-1]
    api.ok("delete", f"/v1/security-groups/lb/rules/{rule['id']}", 204)
    api.ok("delete", "/v1/security-groups/web", 204)  # its rule naming itself goes with it
    assert [g["name"] for g in items(api, "/v1/security-groups")] == ["lb"]


def test_security_group_quota(admin: Api) -> None:
    api = admin.tenant("acme", security_groups=1)
    api.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    refused(api.post("/v1/security-groups", json={"name": "db"}), 409, "quota_exceeded", "security_groups")
    assert [g["name"] for g in items(api, "/v1/security-groups")] == ["web"]


def test_reader_cannot_change_groups(admin: Api) -> None:
    boss = admin.tenant("acme")
    group = boss.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    boss.ok("post", "/v1/users", 201, json={"name": "watcher", "password": "long-enough", "role": "reader"})
    reader = boss.login("watcher", "long-enough")
    assert reader.ok("get", "/v1/security-groups/web") == group
    rule = group["rules"][0]["id"]
    for response in (reader.post("/v1/security-groups", json={"name": "db"}),
                     reader.patch("/v1/security-groups/web", json={"description": "x"}),
                     reader.delete("/v1/security-groups/web"),
                     reader.post("/v1/security-groups/web/rules", json={"direction": "ingress"}),
                     reader.delete(f"/v1/security-groups/web/rules/{rule}")):
        refused(response, 403, "forbidden")
    assert boss.ok("get", "/v1/security-groups/web") == group


def test_other_tenants_groups_are_not_found(admin: Api) -> None:
    acme = admin.tenant("acme")
    web = acme.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    initech = admin.tenant("initech")
    network(initech)
    own = initech.ok("post", "/v1/security-groups", 201, json={"name": "own"})
    assert [g["id"] for g in items(initech, "/v1/security-groups")] == [own["id"]]
    for ref in (web["id"], "web"):
        refused(initech.get(f"/v1/security-groups/{ref}"), 404, "not_found")
        refused(initech.patch(f"/v1/security-groups/{ref}", json={"name": "x"}), 404, "not_found")
        refused(initech.delete(f"/v1/security-groups/{ref}"), 404, "not_found")
        refused(initech.post(f"/v1/security-groups/{ref}/rules", json={"direction": "ingress"}), 404, "not_found")
        refused(initech.delete(f"/v1/security-groups/{ref}/rules/{web['rules'][0]['id']}"), 404, "not_found")
        refused(initech.post("/v1/security-groups/own/rules", json={"direction": "ingress", "remote_group": ref}),
                404, "not_found", "remote_group")
        refused(initech.post("/v1/ports", json={"network": "net", "security_groups": ["own", ref]}),
                404, "not_found", "security_groups[1]")
    assert items(initech, "/v1/ports") == []
    assert len(initech.ok("get", "/v1/security-groups/own")["rules"]) == 1
    assert acme.ok("get", "/v1/security-groups/web") == web


def test_a_description_is_free_text_but_nothing_a_database_cannot_hold(admin: Api) -> None:
    # Found by the fuzzer and the injection tests: a NUL (on PostgreSQL) or an unpaired surrogate
    # (\ud800 in the JSON; on any database) in a description was a 500.
    api = admin.tenant("acme")
    invalid(api.post("/v1/security-groups", json={"name": "web", "description": "a\x00b"}), "description")
    api.ok("post", "/v1/security-groups", 201, json={"name": "web", "description": "front ends"})
    for bad in ("\x00", "\ud800"):
        invalid(api.patch("/v1/security-groups/web", content=json.dumps({"description": bad}),
                          headers={"Content-Type": "application/json"}), "description")
    assert api.ok("get", "/v1/security-groups/web")["description"] == "front ends"


def test_protocols_by_number_and_icmp_types(admin: Api) -> None:
    api = admin.tenant("acme")
    api.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    tcp = api.ok("post", "/v1/security-groups/web/rules", 201, json={"direction": "ingress", "protocol": 6,
                                                                      "port_min": 22})
    gre = api.ok("post", "/v1/security-groups/web/rules", 201, json={"direction": "ingress", "protocol": 47})
    echo = api.ok("post", "/v1/security-groups/web/rules", 201, json={"direction": "ingress", "protocol": "icmp",
                                                                       "icmp_type": 8, "icmp_code": 0})
    assert (tcp["protocol"], tcp["port_min"], tcp["port_max"]) == ("tcp", 22, 22)
    assert gre["protocol"] == "47"
    assert (echo["protocol"], echo["icmp_type"], echo["icmp_code"]) == ("icmp", 8, 0)
    # the same rule by name or by number is the same rule
    refused(api.post("/v1/security-groups/web/rules", json={"direction": "ingress", "protocol": "tcp",
                                                            "port_min": 22}), 409, "conflict")


def test_a_group_holds_a_bounded_number_of_rules(admin: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from frontend.api.routes import security_groups

    monkeypatch.setattr(security_groups, "MAX_RULES_PER_GROUP", 2)
    api = admin.tenant("acme")
    api.ok("post", "/v1/security-groups", 201, json={"name": "web"})  # with its egress rule
    api.ok("post", "/v1/security-groups/web/rules", 201, json={"direction": "ingress", "protocol": "tcp",
                                                               "port_min": 22})
    refused = api.post("/v1/security-groups/web/rules", json={"direction": "ingress", "protocol": "tcp",
                                                              "port_min": 80})
    assert refused.status_code == 409 and "the most a group may hold" in refused.json()["error"]["reason"]
