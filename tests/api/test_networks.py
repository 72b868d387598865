"""Networks, subnets, ports, routers and floating IPs through the API, and the address management under them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from frontend import ipam
from frontend.auth import Caller, Role
from frontend.db.models import Flavor, FloatingIp, Image, Instance, Subnet
from frontend.errors import ApiError, Conflict, Invalid, NotFound
from frontend.api.nics import NicSpec, allocate_instance_ports
from frontend.ipam import release_instance_ports
from frontend.services import Frontend
from tests.api.conftest import Api, error_of


def refused(response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    error = error_of(response)
    assert (response.status_code, error["code"], error["field"]) == (status, code, field), error
    return error


def invalid(response: Any, field: str | None) -> dict[str, Any]:
    return refused(response, 422, "invalid", field)


def network(api: Api, name: str = "net", cidr: str | None = "10.0.0.0/24") -> tuple[dict[str, Any], Any]:
    net = api.ok("post", "/v1/networks", 201, json={"name": name})
    sub = api.ok("post", "/v1/subnets", 201, json={"name": f"{name}-sub", "network": net["id"], "cidr": cidr}) \
        if cidr else None
    return net, sub


def external(admin: Api, name: str = "public", cidr: str = "203.0.113.0/29") -> dict[str, Any]:
    net = admin.ok("post", "/v1/networks", 201, json={"name": name, "external": True})
    admin.ok("post", "/v1/subnets", 201, json={"name": f"{name}-sub", "network": name, "cidr": cidr})
    return dict(net)


def items(api: Api, path: str) -> list[dict[str, Any]]:
    return list(api.ok("get", path)["items"])


# Networks --------------------------------------------------------------------------------

def test_network_create_list_show_rename_delete(admin: Api) -> None:
    api = admin.tenant("acme")
    net = api.ok("post", "/v1/networks", 201, json={"name": "net"})
    assert net["status"] == "active" and net["external"] is False and net["org_id"] == api.who["org_id"]
    assert [n["id"] for n in items(api, "/v1/networks")] == [net["id"]]
    assert api.ok("get", "/v1/networks/net")["id"] == net["id"]
    api.ok("post", "/v1/networks", 201, json={"name": "other"})
    refused(api.patch("/v1/networks/net", json={"name": "other"}), 409, "conflict", "name")
    refused(api.post("/v1/networks", json={"name": "net"}), 409, "conflict", "name")
    assert api.ok("patch", f"/v1/networks/{net['id']}", json={"name": "renamed"})["name"] == "renamed"
    api.ok("delete", "/v1/networks/renamed", 204)
    refused(api.get(f"/v1/networks/{net['id']}"), 404, "not_found")
    assert [n["name"] for n in items(api, "/v1/networks")] == ["other"]


def test_external_networks_are_admin_made_and_seen_by_all(admin: Api) -> None:
    member = admin.tenant("acme", role="member")
    refused(member.post("/v1/networks", json={"name": "public", "external": True}), 403, "forbidden")
    assert items(member, "/v1/networks") == []
    public = admin.ok("post", "/v1/networks", 201, json={"name": "public", "external": True})
    assert [n["id"] for n in items(member, "/v1/networks")] == [public["id"]]
    assert member.ok("get", "/v1/networks/public")["external"] is True
    refused(member.patch(f"/v1/networks/{public['id']}", json={"name": "mine"}), 404, "not_found")
    refused(member.delete("/v1/networks/public"), 404, "not_found")
    refused(member.post("/v1/subnets", json={"name": "s", "network": "public", "cidr": "10.0.0.0/24"}),
            404, "not_found", "network")


def test_network_quota(admin: Api) -> None:
    api = admin.tenant("acme", networks=1)
    api.ok("post", "/v1/networks", 201, json={"name": "one"})
    refused(api.post("/v1/networks", json={"name": "two"}), 409, "quota_exceeded", "networks")
    assert [n["name"] for n in items(api, "/v1/networks")] == ["one"]


def test_network_in_use_cannot_be_deleted(admin: Api) -> None:
    api = admin.tenant("acme")
    _, sub = network(api)
    error = refused(api.delete("/v1/networks/net"), 409, "conflict")
    assert "subnets" in error["reason"]
    api.ok("post", "/v1/routers", 202, json={"name": "r", "network": "net"})
    api.ok("delete", f"/v1/subnets/{sub['id']}", 204)
    assert "router" in refused(api.delete("/v1/networks/net"), 409, "conflict")["reason"]
    api.ok("delete", "/v1/routers/r", 202)
    api.ok("delete", "/v1/networks/net", 204)


def test_reader_may_read_but_not_write(admin: Api) -> None:
    boss = admin.tenant("acme")
    net, sub = network(boss)
    port = boss.ok("post", "/v1/ports", 201, json={"network": "net"})
    reader = boss.login(*_user(boss, "reading", "reader"))
    assert [n["id"] for n in items(reader, "/v1/networks")] == [net["id"]]
    assert reader.ok("get", f"/v1/ports/{port['id']}")["ip_address"] == port["ip_address"]
    for method, path, body in (
            ("post", "/v1/networks", {"name": "x"}), ("patch", "/v1/networks/net", {"name": "x"}),
            ("delete", "/v1/networks/net", None),
            ("post", "/v1/subnets", {"name": "x", "network": "net", "cidr": "10.1.0.0/24"}),
            ("patch", f"/v1/subnets/{sub['id']}", {"dhcp": False}), ("delete", f"/v1/subnets/{sub['id']}", None),
            ("post", "/v1/ports", {"network": "net"}), ("delete", f"/v1/ports/{port['id']}", None),
            ("post", "/v1/routers", {"name": "r", "network": "net"}), ("post", "/v1/floating-ips", {})):
        response = getattr(reader, method)(path, **({"json": body} if body is not None else {}))
        refused(response, 403, "forbidden")
    assert len(items(boss, "/v1/networks")) == 1 and len(items(boss, "/v1/ports")) == 1


def _user(boss: Api, name: str, role: str) -> tuple[str, str]:
    boss.ok("post", "/v1/users", 201, json={"name": name, "password": "long-enough", "role": role})
    return name, "long-enough"


# Subnets ---------------------------------------------------------------------------------

def test_subnet_create_list_show_update_delete(admin: Api) -> None:
    api = admin.tenant("acme")
    net, _ = network(api, cidr=None)
    sub = api.ok("post", "/v1/subnets", 201, json={"name": "sub", "network": "net", "cidr": "10.0.0.0/24",
                                                   "dns_servers": ["9.9.9.9"]})
    assert (sub["network_id"], sub["cidr"], sub["gateway"], sub["dhcp"], sub["dns_servers"]) == \
        (net["id"], "10.0.0.0/24", "10.0.0.1", True, ["9.9.9.9"])
    assert ipam.VNI_MIN <= sub["vni"] <= ipam.VNI_MAX
    other = api.ok("post", "/v1/subnets", 201, json={"name": "b", "network": "net", "cidr": "10.0.1.0/24",
                                                     "gateway": "10.0.1.254", "dhcp": False})
    assert other["gateway"] == "10.0.1.254" and other["vni"] != sub["vni"]
    network(api, "net2", "192.168.0.0/16")
    assert [s["name"] for s in items(api, "/v1/subnets?network=net")] == ["sub", "b"]
    assert len(items(api, "/v1/subnets")) == 3
    refused(api.get("/v1/subnets?network=nope"), 404, "not_found", "network")
    assert api.ok("get", "/v1/subnets/sub")["id"] == sub["id"]
    changed = api.ok("patch", "/v1/subnets/sub", json={"name": "main", "dhcp": False, "dns_servers": []})
    assert (changed["name"], changed["dhcp"], changed["dns_servers"], changed["cidr"]) == \
        ("main", False, [], "10.0.0.0/24")
    invalid(api.patch("/v1/subnets/main", json={"cidr": "10.9.0.0/24"}), "cidr")
    api.ok("delete", "/v1/subnets/main", 204)
    refused(api.get(f"/v1/subnets/{sub['id']}"), 404, "not_found")


@pytest.mark.parametrize("cidr, reason", [
    ("10.0.0.1/24", "10.0.0.1/24 is not a network address: its host bits are set (did you mean 10.0.0.0/24?)"),
    ("10.0.0.0/30", "the prefix must be between /8 and /29, not /30"),
    ("10.0.0.0/7", "the prefix must be between /8 and /29, not /7"),
    ("10.0.0.0", "the prefix must be between /8 and /29, not /32"),
    ("fd00::/64", "'fd00::/64' is IPv6, which tenant networks do not carry yet: give an IPv4 network in CIDR "
                  "notation, e.g. 10.0.0.0/24"),
    ("ten.0.0.0/8", "'ten.0.0.0/8' is not an IPv4 network in CIDR notation, e.g. 10.0.0.0/24"),
])
def test_bad_cidrs_are_refused(admin: Api, cidr: str, reason: str) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    response = api.post("/v1/subnets", json={"name": "sub", "network": "net", "cidr": cidr})
    assert refused(response, 422, "invalid", "cidr")["reason"] == reason
    assert items(api, "/v1/subnets") == []


@pytest.mark.parametrize("gateway", ["10.0.1.1", "10.0.0.0", "10.0.0.255", "10.0.0.300"])
def test_gateway_must_be_a_host_of_the_subnet(admin: Api, gateway: str) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    response = api.post("/v1/subnets", json={"name": "sub", "network": "net", "cidr": "10.0.0.0/24",
                                             "gateway": gateway})
    refused(response, 422, "invalid", "gateway")
    assert items(api, "/v1/subnets") == []


def test_overlapping_cidrs_are_refused_within_a_network_only(admin: Api) -> None:
    acme = admin.tenant("acme")
    network(acme)
    for cidr in ("10.0.0.0/24", "10.0.0.128/25", "10.0.0.0/16"):
        response = acme.post("/v1/subnets", json={"name": "x", "network": "net", "cidr": cidr})
        assert "overlaps subnet 'net-sub'" in refused(response, 409, "conflict", "cidr")["reason"]
    assert [s["cidr"] for s in items(acme, "/v1/subnets")] == ["10.0.0.0/24"]
    acme.ok("post", "/v1/subnets", 201, json={"name": "next", "network": "net", "cidr": "10.0.1.0/24"})
    network(acme, "other", "10.0.0.0/24")
    initech = admin.tenant("initech")
    network(initech, "net", "10.0.0.0/24")
    vnis = [s["vni"] for api in (acme, initech) for s in items(api, "/v1/subnets")]
    assert len(vnis) == len(set(vnis)) == 4


def test_unknown_and_foreign_networks_answer_404(admin: Api) -> None:
    acme = admin.tenant("acme")
    net, _ = network(acme)
    initech = admin.tenant("initech")
    for ref in (net["id"], "net", "nope"):
        response = initech.post("/v1/subnets", json={"name": "s", "network": ref, "cidr": "10.0.0.0/24"})
        assert refused(response, 404, "not_found", "network")["reason"] == f"no network {ref!r}"
        refused(initech.post("/v1/ports", json={"network": ref}), 404, "not_found", "network")
        refused(initech.post("/v1/routers", json={"name": "r", "network": ref}), 404, "not_found", "network")
    assert items(initech, "/v1/subnets") == [] and items(initech, "/v1/ports") == []


def test_subnet_with_ports_cannot_be_deleted(admin: Api) -> None:
    api = admin.tenant("acme")
    _, sub = network(api)
    port = api.ok("post", "/v1/ports", 201, json={"subnet": sub["id"]})
    assert "1 ports" in refused(api.delete(f"/v1/subnets/{sub['id']}"), 409, "conflict")["reason"]
    api.ok("delete", f"/v1/ports/{port['id']}", 204)
    api.ok("delete", f"/v1/subnets/{sub['id']}", 204)


def test_vni_is_picked_again_on_collision(admin: Api, frontend: Frontend, monkeypatch: pytest.MonkeyPatch) -> None:
    api = admin.tenant("acme")
    _, sub = network(api)
    picks = iter([sub["vni"], sub["vni"], 4096])
    monkeypatch.setattr(ipam.random, "randint", lambda low, high: next(picks))
    with frontend.db.transaction() as session:
        assert ipam.pick_vni(session) == 4096


# Ports -----------------------------------------------------------------------------------

def test_ports_get_the_next_free_address_or_a_fixed_one(admin: Api) -> None:
    api = admin.tenant("acme")
    net, sub = network(api, cidr="10.0.0.0/29")
    first = api.ok("post", "/v1/ports", 201, json={"network": "net", "name": "first"})
    assert (first["ip_address"], first["network_id"], first["subnet_id"]) == ("10.0.0.2", net["id"], sub["id"])
    assert first["mac_address"].startswith("fa:16:3e:") and first["instance_id"] is None
    assert first["auto_delete"] is False
    fixed = api.ok("post", "/v1/ports", 201, json={"subnet": "net-sub", "ip": "10.0.0.3"})
    assert fixed["ip_address"] == "10.0.0.3" and fixed["mac_address"] != first["mac_address"]
    assert api.ok("post", "/v1/ports", 201, json={"network": "net"})["ip_address"] == "10.0.0.4"
    before = items(api, "/v1/ports")
    assert "in use" in refused(api.post("/v1/ports", json={"network": "net", "ip": "10.0.0.3"}),
                               409, "conflict", "ip")["reason"]
    assert "gateway" in refused(api.post("/v1/ports", json={"network": "net", "ip": "10.0.0.1"}),
                                409, "conflict", "ip")["reason"]
    for outside in ("10.0.0.7", "10.0.1.5"):
        invalid(api.post("/v1/ports", json={"network": "net", "ip": outside}), "ip")
    invalid(api.post("/v1/ports", json={"network": "net", "ip": "10.0.0.256"}), "ip")
    invalid(api.post("/v1/ports", json={"network": "net", "subnet": "net-sub"}), None)
    invalid(api.post("/v1/ports", json={}), None)
    api.ok("post", "/v1/ports", 201, json={"network": "net", "ip": "10.0.0.6"})
    api.ok("post", "/v1/ports", 201, json={"network": "net"})
    assert "no free address" in refused(api.post("/v1/ports", json={"network": "net"}), 409, "conflict")["reason"]
    assert len(items(api, "/v1/ports")) == len(before) + 2


def test_port_needs_a_subnet_on_its_network(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    assert "no subnet" in refused(api.post("/v1/ports", json={"network": "net"}), 409, "conflict", "network")["reason"]


def test_port_show_filter_update_delete(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api)
    network(api, "other", "10.1.0.0/24")
    port = api.ok("post", "/v1/ports", 201, json={"network": "net", "name": "web"})
    default = api.ok("get", "/v1/security-groups/default")
    assert port["security_groups"] == [default["id"]]
    api.ok("post", "/v1/ports", 201, json={"network": "other"})
    assert [p["id"] for p in items(api, "/v1/ports?network=net")] == [port["id"]]
    refused(api.get("/v1/ports?instance=nope"), 404, "not_found", "instance")
    assert api.ok("get", "/v1/ports/web")["id"] == port["id"]
    web = api.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    ssh = api.ok("post", "/v1/security-groups", 201, json={"name": "ssh"})
    changed = api.ok("patch", "/v1/ports/web", json={"name": "www", "security_groups": ["web", ssh["id"], "web"]})
    assert changed["name"] == "www" and changed["security_groups"] == sorted([web["id"], ssh["id"]])
    refused(api.patch("/v1/ports/www", json={"security_groups": ["web", "nope"]}), 404, "not_found",
            "security_groups[1]")
    assert api.ok("get", "/v1/ports/www")["security_groups"] == sorted([web["id"], ssh["id"]])
    api.ok("delete", "/v1/ports/www", 204)
    refused(api.get(f"/v1/ports/{port['id']}"), 404, "not_found")


# Routers ---------------------------------------------------------------------------------

def test_one_router_per_network(admin: Api) -> None:
    api = admin.tenant("acme")
    net, _ = network(api)
    router = api.ok("post", "/v1/routers", 202, json={"name": "r1", "network": "net"})["resource"]
    assert router["network_id"] == net["id"] and router["snat"] is True
    assert "router already" in refused(api.post("/v1/routers", json={"name": "r2", "network": net["id"]}),
                                       409, "conflict", "network")["reason"]
    assert [r["name"] for r in items(api, "/v1/routers")] == ["r1"]
    changed = api.ok("patch", "/v1/routers/r1", 202, json={"snat": False, "name": "edge"})["resource"]
    assert (changed["name"], changed["snat"]) == ("edge", False)
    assert api.ok("get", f"/v1/routers/{router['id']}")["name"] == "edge"
    api.ok("delete", "/v1/routers/edge", 202)
    assert items(api, "/v1/routers") == []


def test_router_on_an_external_network_is_refused(admin: Api) -> None:
    external(admin)
    invalid(admin.post("/v1/routers", json={"name": "r", "network": "public"}), "network")


# Floating IPs ----------------------------------------------------------------------------

def test_floating_ip_allocate_associate_disassociate_release(admin: Api) -> None:
    api = admin.tenant("acme")
    invalid(api.post("/v1/floating-ips", json={}), "network")
    public = external(admin)
    network(api)
    fip = api.ok("post", "/v1/floating-ips", 201, json={})
    assert (fip["network_id"], fip["address"], fip["port_id"]) == (public["id"], "203.0.113.2", None)
    assert api.ok("post", "/v1/floating-ips", 201, json={"network": "public"})["address"] == "203.0.113.3"
    port = api.ok("post", "/v1/ports", 201, json={"network": "net"})
    reason = refused(api.patch(f"/v1/floating-ips/{fip['id']}", json={"port": port["id"]}),
                     409, "conflict", "port")["reason"]
    assert "no router" in reason
    api.ok("post", "/v1/routers", 202, json={"name": "r", "network": "net"})
    assert api.ok("patch", f"/v1/floating-ips/{fip['id']}", 202, json={"port": port["id"]})["resource"]["port_id"] == port["id"]
    assert api.ok("get", "/v1/floating-ips/203.0.113.2")["port_id"] == port["id"]
    refused(api.patch("/v1/floating-ips/203.0.113.3", json={"port": port["id"]}), 409, "conflict", "port")
    refused(api.patch("/v1/floating-ips/203.0.113.3", json={"port": "nope"}), 404, "not_found", "port")
    invalid(api.patch("/v1/floating-ips/203.0.113.3", json={}), "port")
    assert "disassociate" in refused(api.delete("/v1/routers/r"), 409, "conflict")["reason"]
    assert api.ok("patch", f"/v1/floating-ips/{fip['id']}", 202, json={"port": None})["resource"]["port_id"] is None
    api.ok("patch", f"/v1/floating-ips/{fip['id']}", 202, json={"port": port["id"]})
    api.ok("delete", f"/v1/ports/{port['id']}", 204)
    assert api.ok("get", f"/v1/floating-ips/{fip['id']}")["port_id"] is None
    api.ok("delete", f"/v1/floating-ips/{fip['id']}", 202)
    assert [f["address"] for f in items(api, "/v1/floating-ips")] == ["203.0.113.3"]
    assert "floating IPs" in refused(admin.delete("/v1/subnets/public-sub"), 409, "conflict")["reason"]


def test_floating_ip_network_choice(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api)
    external(admin, "public", "203.0.113.0/29")
    external(admin, "backup", "198.51.100.0/29")
    assert "name the one" in invalid(api.post("/v1/floating-ips", json={}), "network")["reason"]
    invalid(api.post("/v1/floating-ips", json={"network": "net"}), "network")
    refused(api.post("/v1/floating-ips", json={"network": "nope"}), 404, "not_found", "network")
    assert api.ok("post", "/v1/floating-ips", 201, json={"network": "backup"})["address"] == "198.51.100.2"
    assert len(items(api, "/v1/floating-ips")) == 1


def test_floating_ip_pool_and_quota(admin: Api) -> None:
    external(admin, cidr="203.0.113.0/29")  # hosts .2 to .6: five addresses after the gateway
    api = admin.tenant("acme", floating_ips=2)
    other = admin.tenant("initech")
    addresses = [api.ok("post", "/v1/floating-ips", 201, json={})["address"] for _ in range(2)]
    refused(api.post("/v1/floating-ips", json={}), 409, "quota_exceeded", "floating_ips")
    addresses += [other.ok("post", "/v1/floating-ips", 201, json={})["address"] for _ in range(3)]
    assert addresses == [f"203.0.113.{i}" for i in range(2, 7)]
    refused(other.post("/v1/floating-ips", json={}), 409, "conflict", "network")
    assert len(items(api, "/v1/floating-ips")) == 2 and len(items(other, "/v1/floating-ips")) == 3


# Tenant isolation ------------------------------------------------------------------------

def test_tenants_cannot_see_or_touch_each_others_resources(admin: Api) -> None:
    external(admin)
    acme = admin.tenant("acme")
    net, sub = network(acme)
    port = acme.ok("post", "/v1/ports", 201, json={"network": "net", "name": "web"})
    router = acme.ok("post", "/v1/routers", 202, json={"name": "r", "network": "net"})["resource"]
    fip = acme.ok("post", "/v1/floating-ips", 201, json={})
    group = acme.ok("get", "/v1/security-groups/default")
    initech = admin.tenant("initech")
    for kind, row, change in (("networks", net, {"name": "x"}), ("subnets", sub, {"name": "x"}),
                              ("ports", port, {"name": "x"}), ("routers", router, {"name": "x"}),
                              ("floating-ips", fip, {"port": None}), ("security-groups", group, {"name": "x"})):
        listed = [r["id"] for r in items(initech, f"/v1/{kind}") if r["id"] == row["id"]]
        assert listed == [], kind
        for ref in (row["id"], row.get("name") or row.get("address")):
            refused(initech.get(f"/v1/{kind}/{ref}"), 404, "not_found")
            refused(initech.patch(f"/v1/{kind}/{ref}", json=change), 404, "not_found")
            refused(initech.delete(f"/v1/{kind}/{ref}"), 404, "not_found")
        assert acme.ok("get", f"/v1/{kind}/{row['id']}") == row, kind
    network(initech)
    initech.ok("post", "/v1/routers", 202, json={"name": "r", "network": "net"})
    own = initech.ok("post", "/v1/floating-ips", 201, json={})
    refused(initech.patch(f"/v1/floating-ips/{own['id']}", json={"port": port["id"]}), 404, "not_found", "port")
    refused(initech.patch(f"/v1/floating-ips/{fip['id']}", json={"port": None}), 404, "not_found")
    refused(initech.get(f"/v1/ports?network={net['id']}"), 404, "not_found", "network")


# Instance ports (ipam) -------------------------------------------------------------------

def _instance(frontend: Frontend, api: Api, name: str) -> str:
    with frontend.db.transaction() as session:
        org = api.who["org_id"]
        flavor = Flavor(org_id=org, name=f"f-{name}", vcpus=1, memory_mb=128, disk_gb=1, status="active")
        image = Image(org_id=org, name=f"i-{name}", format="qcow2", status="active")
        session.add_all([flavor, image])
        session.flush()
        instance = Instance(org_id=org, name=name, flavor_id=flavor.id, image_id=image.id, vcpus=1, memory_mb=128,
                            disk_gb=1, status="building")
        session.add(instance)
        session.flush()
        return instance.id


def _caller(api: Api) -> Caller:
    return Caller(api.who["user_id"], "someone", api.who["org_id"], Role.member, "token")


def _allocate(frontend: Frontend, api: Api, instance_id: str, *nics: dict[str, Any]) -> list[dict[str, Any]]:
    with frontend.db.transaction() as session:
        ports = allocate_instance_ports(session, _caller(api), [NicSpec(**n) for n in nics], instance_id)
        return [{"id": p.id, "ip": p.ip_address, "subnet": p.subnet_id, "auto_delete": p.auto_delete,
                 "instance": p.instance_id, "groups": sorted(g.name for g in p.security_groups)} for p in ports]


def _refused(frontend: Frontend, api: Api, instance_id: str, *nics: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as raised:
        _allocate(frontend, api, instance_id, *nics)
    return raised.value


def test_allocate_and_release_instance_ports(admin: Api, frontend: Frontend) -> None:
    external(admin)
    api = admin.tenant("acme")
    network(api)
    _, second = network(api, "back", "10.1.0.0/24")
    api.ok("post", "/v1/routers", 202, json={"name": "r", "network": "net"})
    api.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    kept = api.ok("post", "/v1/ports", 201, json={"network": "net", "name": "kept"})
    vm = _instance(frontend, api, "vm")
    ports = _allocate(frontend, api, vm, {"network": "net"}, {"subnet": second["id"], "ip": "10.1.0.9"},
                      {"port": "kept", "security_groups": ["web"]})
    assert [(p["ip"], p["auto_delete"], p["instance"], p["groups"]) for p in ports] == [
        ("10.0.0.3", True, vm, ["default"]), ("10.1.0.9", True, vm, ["default"]),
        (kept["ip_address"], False, vm, ["web"])]
    assert {p["id"] for p in items(api, f"/v1/ports?instance={vm}")} == {p["id"] for p in ports}
    assert items(api, "/v1/ports?instance=vm") == items(api, f"/v1/ports?instance={vm}")  # by name too
    fip = api.ok("post", "/v1/floating-ips", 201, json={})
    api.ok("patch", f"/v1/floating-ips/{fip['id']}", 202, json={"port": ports[0]["id"]})
    refused(api.delete(f"/v1/ports/{ports[0]['id']}"), 409, "conflict")

    other = _instance(frontend, api, "other")
    error = _refused(frontend, api, other, {"network": "net"}, {"port": kept["id"]})
    assert isinstance(error, Conflict) and error.field == "nics[1].port"
    error = _refused(frontend, api, other, {"subnet": "nope"})
    assert isinstance(error, NotFound) and error.field == "nics[0].subnet"
    error = _refused(frontend, api, other, {"network": "back", "ip": "10.1.0.9"})
    assert isinstance(error, Conflict) and error.field == "nics[0].ip"
    error = _refused(frontend, api, other, {"network": "net", "security_groups": ["web", "nope"]})
    assert isinstance(error, NotFound) and error.field == "nics[0].security_groups[1]"
    assert len(items(api, "/v1/ports")) == 3  # the refused allocations left nothing behind

    with frontend.db.transaction() as session:
        release_instance_ports(session, vm)
    assert [(p["id"], p["instance_id"]) for p in items(api, "/v1/ports")] == [(kept["id"], None)]
    assert api.ok("get", f"/v1/floating-ips/{fip['id']}")["port_id"] is None
    assert _allocate(frontend, api, other, {"port": kept["id"]})[0]["groups"] == ["web"]


def test_foreign_refs_in_nics_are_not_found(admin: Api, frontend: Frontend) -> None:
    acme = admin.tenant("acme")
    net, sub = network(acme)
    port = acme.ok("post", "/v1/ports", 201, json={"network": "net"})
    initech = admin.tenant("initech")
    vm = _instance(frontend, initech, "vm")
    for nic, field in (({"network": net["id"]}, "nics[0].network"), ({"subnet": sub["id"]}, "nics[0].subnet"),
                       ({"port": port["id"]}, "nics[0].port")):
        error = _refused(frontend, initech, vm, nic)
        assert isinstance(error, NotFound) and error.field == field
    assert acme.ok("get", f"/v1/ports/{port['id']}")["instance_id"] is None


@pytest.mark.parametrize("nic", [{}, {"network": "a", "subnet": "b"}, {"port": "p", "ip": "10.0.0.5"},
                                 {"network": "a", "ip": "nope"}, {"network": "a", "colour": "red"}])
def test_nic_spec_is_validated(nic: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NicSpec(**nic)


def test_address_helpers(admin: Api, frontend: Frontend) -> None:
    api = admin.tenant("acme")
    _, sub = network(api, cidr="10.0.0.0/29")
    with frontend.db.transaction() as session:
        subnet = session.get(Subnet, sub["id"])
        assert subnet is not None
        assert ipam.allocate_ip(session, subnet) == "10.0.0.2"
        session.add(FloatingIp(org_id=api.who["org_id"], network_id=subnet.network_id, address="10.0.0.2",
                               status="active"))
        session.flush()
        assert ipam.allocate_ip(session, subnet) == "10.0.0.3"
        with pytest.raises(Conflict):
            ipam.claim_ip(session, subnet, "10.0.0.2")
        assert ipam.claim_ip(session, subnet, "10.0.0.6") == "10.0.0.6"
        with pytest.raises(Invalid):
            ipam.claim_ip(session, subnet, "10.0.0.7")
        first = int(ipam.new_mac(session).split(":")[0], 16)
        assert first & 0b10 and not first & 0b01  # locally administered, unicast


def test_naming_the_default_group_before_its_first_use_makes_it(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api)
    port = api.ok("post", "/v1/ports", 201, json={"network": "net", "security_groups": ["default"]})
    assert port["security_groups"] == [api.ok("get", "/v1/security-groups/default")["id"]]
