"""``net.sync`` bodies: what the schema refuses and what the typed state refuses, naming the field."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from backend.network import names
from backend.network.exceptions import BadRequest
from backend.network.spec import ARGS, desired_state
from backend.argcheck import ArgError

NET, SUBNET, PORT = (str(uuid.uuid4()) for _ in range(3))
BODY: dict[str, Any] = {"revision": 1, "scope": None, "networks": [{
    "id": NET, "router": True, "snat": True, "external": {"cidr": "203.0.113.0/24", "gateway": "203.0.113.1"},
    "floating_ips": [{"address": "203.0.113.100", "port_id": PORT}],
    "subnets": [{"id": SUBNET, "vni": 42, "cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "dhcp": True,
                 "dns_servers": ["192.0.2.53"]}],
    "ports": [{"id": PORT, "subnet_id": SUBNET, "mac": "52:54:00:00:00:01", "ip": "10.0.0.5", "vtep": "192.0.2.1"},
              {"id": str(uuid.uuid4()), "subnet_id": SUBNET, "mac": "52:54:00:00:00:02", "ip": "10.0.0.6",
               "vtep": "192.0.2.2"}]}]}
VTEP = "192.0.2.1"


def _body(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    for path, value in changes.items():
        target = body["networks"][0]
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return body


def test_a_good_body_gives_the_typed_state() -> None:
    ARGS["net.sync"].check(BODY)
    state = desired_state(BODY, VTEP)
    assert state.scope is None
    (network,) = state.networks
    assert network.subnets[0].cidr.prefixlen == 24 and network.ports[0].id == PORT
    assert network.remote_ports[0].vtep == "192.0.2.2" and len(network.ports) == 1
    assert network.floating_ips[0].port_id == PORT
    # the same body on the other host: the ports swap sides, and the floating IP is not its own
    other = desired_state(BODY, "192.0.2.2").networks[0]
    assert other.ports[0].ip == "10.0.0.6" and other.remote_ports[0].vtep == VTEP and not other.floating_ips


@pytest.mark.parametrize("change, field", [
    ({"subnets__0__vni": 0}, "args.networks[0].subnets[0].vni"),
    ({"subnets__0__cidr": "10.0.0.1/24"}, "args.networks[0].subnets[0].cidr"),
    ({"subnets__0__dhcp": 1}, "args.networks[0].subnets[0].dhcp"),
    ({"ports__0__mac": "52:54:00:00:00"}, "args.networks[0].ports[0].mac"),
    ({"ports__1__vtep": "host2"}, "args.networks[0].ports[1].vtep"),
])
def test_the_schema_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ArgError) as caught:
        ARGS["net.sync"].check(_body(**change))
    assert caught.value.field == field


@pytest.mark.parametrize("change, message", [
    ({"subnets__0__cidr": "10.0.0.0/30"}, "subnets[0].cidr: smaller than /29"),
    ({"subnets__0__gateway": "10.0.1.1"}, "subnets[0].gateway: outside its subnet"),
    ({"ports__0__ip": "10.0.1.5"}, "ports[0].ip: outside its subnet"),
    ({"ports__1__subnet_id": str(uuid.uuid4())}, "ports[1].subnet_id: not a subnet of this network"),
    ({"router": False}, "router: SNAT and an external network need a router"),
    ({"floating_ips__0__address": "198.51.100.7"}, "floating_ips[0].address: outside the external network"),
    ({"floating_ips__0__port_id": str(uuid.uuid4())}, "floating_ips[0].port_id: not a port of this network"),
    ({"external": None, "snat": False}, "floating_ips[0]: a floating IP needs the network's external network"),
])
def test_a_state_that_cannot_be_built_is_refused(change: dict[str, Any], message: str) -> None:
    body = _body(**change)
    ARGS["net.sync"].check(body)
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        desired_state(body, VTEP)


def test_a_vni_given_twice_and_networks_outside_the_scope_are_refused() -> None:
    twice = copy.deepcopy(BODY)
    twice["networks"].append({**copy.deepcopy(BODY["networks"][0]), "id": str(uuid.uuid4())})
    with pytest.raises(BadRequest, match="a VNI is given to two subnets"):
        desired_state(twice, VTEP)
    with pytest.raises(BadRequest, match="outside args.scope"):
        desired_state({**BODY, "scope": [str(uuid.uuid4())]}, VTEP)


def test_device_names_fit_and_are_told_apart() -> None:
    assert len(names.bridge((1 << 24) - 1)) <= 15 and len(names.gateway_leg((1 << 24) - 1)) <= 15
    assert names.vni_of("clx16777215") == 16777215 and names.vni_of("eth0") is None
    assert names.vni_of("clb42x") is None
    mac = names.gateway_mac("hv1", SUBNET)
    assert mac != names.gateway_mac("hv2", SUBNET) and int(mac.split(":")[0], 16) & 0b11 == 0b10
