"""Subnets' allocation pools: what they may hold, and that automatic allocation keeps inside them."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_networks import invalid, items, network, refused


def pools(*ranges: str) -> list[dict[str, str]]:
    """``"10.0.0.10-10.0.0.20"`` -> ``{"start": "10.0.0.10", "end": "10.0.0.20"}``."""
    return [dict(zip(("start", "end"), r.split("-"), strict=True)) for r in ranges]


def subnet(api: Api, cidr: str = "10.0.0.0/24", **body: Any) -> dict[str, Any]:
    return dict(api.ok("post", "/v1/subnets", 201, json={"name": "sub", "network": "net", "cidr": cidr, **body}))


def auto_ports(api: Api, n: int) -> list[str]:
    return [api.ok("post", "/v1/ports", 201, json={"network": "net"})["ip_address"] for _ in range(n)]


def test_default_pools_are_every_host_but_the_gateway(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    assert subnet(api)["allocation_pools"] == pools("10.0.0.2-10.0.0.254")
    api.ok("delete", "/v1/subnets/sub", 204)
    assert subnet(api, gateway="10.0.0.254")["allocation_pools"] == pools("10.0.0.1-10.0.0.253")
    api.ok("delete", "/v1/subnets/sub", 204)
    sub = subnet(api, "10.0.0.0/29", gateway="10.0.0.3")
    assert sub["allocation_pools"] == pools("10.0.0.1-10.0.0.2", "10.0.0.4-10.0.0.6")
    assert api.ok("get", "/v1/subnets/sub")["allocation_pools"] == sub["allocation_pools"]
    assert auto_ports(api, 4) == ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5"]


#: (the pools, the field refused, words of the reason); the CIDR is 10.0.0.0/24, the gateway 10.0.0.1
BAD_POOLS: list[tuple[list[dict[str, str]], str, str]] = [
    (pools("10.0.0.20-10.0.0.10"), "allocation_pools[0]", "the start 10.0.0.20 is after the end 10.0.0.10"),
    (pools("10.0.1.5-10.0.1.9"), "allocation_pools[0].start", "10.0.1.5 is outside the subnet's CIDR 10.0.0.0/24"),
    (pools("10.0.0.2-10.0.0.9", "10.0.0.250-10.0.1.3"), "allocation_pools[1].end", "10.0.1.3 is outside"),
    (pools("10.0.0.0-10.0.0.9"), "allocation_pools[0].start", "10.0.0.0 is the network address of 10.0.0.0/24"),
    (pools("10.0.0.200-10.0.0.255"), "allocation_pools[0].end", "10.0.0.255 is the broadcast address"),
    (pools("10.0.0.1-10.0.0.9"), "allocation_pools[0]", "holds the gateway 10.0.0.1"),
    (pools("10.0.0.10-10.0.0.20", "10.0.0.30-10.0.0.40", "10.0.0.15-10.0.0.25"), "allocation_pools[2]",
     "10.0.0.15-10.0.0.25 overlaps allocation_pools[0]"),
    (pools("10.0.0.30-10.0.0.40", "10.0.0.40-10.0.0.50"), "allocation_pools[1]", "overlaps allocation_pools[0]"),
    (pools("10.0.0.300-10.0.0.301"), "allocation_pools.0.start", "is not an IPv4 address"),
    ([{"start": "10.0.0.5", "end": "10.0.0.6", "size": "2"}], "allocation_pools.0.size", "unknown field"),
    (pools(*[f"10.0.0.{i}-10.0.0.{i}" for i in range(2, 19)]), "allocation_pools", "at most 16"),
]


def test_bad_pools_are_refused_at_create_and_update(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    for bad, field, reason in BAD_POOLS:
        response = api.post("/v1/subnets", json={"name": "sub", "network": "net", "cidr": "10.0.0.0/24",
                                                 "allocation_pools": bad})
        assert reason in invalid(response, field)["reason"], (bad, response.text)
    assert items(api, "/v1/subnets") == []
    subnet(api, allocation_pools=pools("10.0.0.100-10.0.0.200"))
    for bad, field, reason in BAD_POOLS:
        response = api.patch("/v1/subnets/sub", json={"allocation_pools": bad})
        assert reason in invalid(response, field)["reason"], (bad, response.text)
    assert api.ok("get", "/v1/subnets/sub")["allocation_pools"] == pools("10.0.0.100-10.0.0.200")


def test_a_given_gateway_may_not_be_in_a_pool(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    response = api.post("/v1/subnets", json={"name": "sub", "network": "net", "cidr": "10.0.0.0/24",
                                             "gateway": "10.0.0.100",
                                             "allocation_pools": pools("10.0.0.50-10.0.0.150")})
    assert invalid(response, "allocation_pools[0]")["reason"] == \
        "holds the gateway 10.0.0.100, which no port may take"
    sub = subnet(api, gateway="10.0.0.100", allocation_pools=pools("10.0.0.101-10.0.0.150", "10.0.0.2-10.0.0.99"))
    assert sub["allocation_pools"] == pools("10.0.0.2-10.0.0.99", "10.0.0.101-10.0.0.150")  # lowest first


def test_ports_take_addresses_from_the_pools_only(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    subnet(api, allocation_pools=pools("10.0.0.20-10.0.0.20", "10.0.0.10-10.0.0.11"))
    assert auto_ports(api, 3) == ["10.0.0.10", "10.0.0.11", "10.0.0.20"]
    reason = refused(api.post("/v1/ports", json={"network": "net"}), 409, "conflict")["reason"]
    assert reason == ("subnet 'sub' (10.0.0.0/24) has no free address in its allocation pools "
                      "(10.0.0.10-10.0.0.11, 10.0.0.20-10.0.0.20)")
    # An address asked for may be outside the pools (as in Neutron), but not the gateway nor one in use.
    assert api.ok("post", "/v1/ports", 201, json={"network": "net", "ip": "10.0.0.5"})["ip_address"] == "10.0.0.5"
    assert api.ok("post", "/v1/ports", 201, json={"network": "net", "ip": "10.0.0.254"})["ip_address"] == "10.0.0.254"
    refused(api.post("/v1/ports", json={"network": "net", "ip": "10.0.0.1"}), 409, "conflict", "ip")
    refused(api.post("/v1/ports", json={"network": "net", "ip": "10.0.0.10"}), 409, "conflict", "ip")


def test_changed_pools_keep_the_addresses_given_outside_them(admin: Api) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    subnet(api, allocation_pools=pools("10.0.0.10-10.0.0.12"))
    assert auto_ports(api, 2) == ["10.0.0.10", "10.0.0.11"]
    changed = api.ok("patch", "/v1/subnets/sub", json={"allocation_pools": pools("10.0.0.11-10.0.0.13")})
    assert changed["allocation_pools"] == pools("10.0.0.11-10.0.0.13")
    assert sorted(p["ip_address"] for p in items(api, "/v1/ports")) == ["10.0.0.10", "10.0.0.11"]
    assert auto_ports(api, 2) == ["10.0.0.12", "10.0.0.13"]
    # Other changes leave the pools alone; an empty list leaves only addresses asked for.
    assert api.ok("patch", "/v1/subnets/sub", json={"dhcp": False})["allocation_pools"] == changed["allocation_pools"]
    assert api.ok("patch", "/v1/subnets/sub", json={"allocation_pools": []})["allocation_pools"] == []
    assert "pools (none)" in refused(api.post("/v1/ports", json={"network": "net"}), 409, "conflict")["reason"]
    api.ok("post", "/v1/ports", 201, json={"network": "net", "ip": "10.0.0.50"})


def test_floating_ips_take_addresses_from_the_pools_only(admin: Api) -> None:
    admin.ok("post", "/v1/networks", 201, json={"name": "public", "external": True})
    # The hosts' own addresses (.11, .12, ...) and the router's (.1) lie outside the pool.
    admin.ok("post", "/v1/subnets", 201, json={"name": "public-v4", "network": "public", "cidr": "203.0.113.0/24",
                                               "allocation_pools": pools("203.0.113.100-203.0.113.101")})
    api = admin.tenant("acme")
    addresses = [api.ok("post", "/v1/floating-ips", 201, json={})["address"] for _ in range(2)]
    assert addresses == ["203.0.113.100", "203.0.113.101"]
    reason = refused(api.post("/v1/floating-ips", json={}), 409, "conflict", "network")["reason"]
    assert reason == "external network 'public' has no free address in the allocation pools of its subnets"
    api.ok("delete", "/v1/floating-ips/203.0.113.100", 202)
    assert api.ok("post", "/v1/floating-ips", 201, json={})["address"] == "203.0.113.100"


def test_a_pool_high_in_a_large_subnet_is_reached_at_once(admin: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api = admin.tenant("acme")
    network(api, cidr=None)
    subnet(api, "10.0.0.0/8", allocation_pools=pools("10.255.255.250-10.255.255.254"))
    looked_at: list[int | str] = []

    class Counting:
        """``ipaddress`` as ipam sees it, counting the addresses it makes."""
        def __getattr__(self, name: str) -> Any:
            return getattr(ipaddress, name)

        @staticmethod
        def IPv4Address(address: int | str) -> ipaddress.IPv4Address:  # noqa: N802 (ipaddress's own name)
            looked_at.append(address)
            return ipaddress.IPv4Address(address)
    monkeypatch.setattr("frontend.ipam.ipaddress", Counting())
    assert auto_ports(api, 1) == ["10.255.255.250"]
    assert len(looked_at) < 100, len(looked_at)  # no walk over the 16 million addresses below the pool
