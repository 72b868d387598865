"""What the frontend pushes to hypervisors of tenant networks, and to which ones.

Hosts here run a stand-in of the network driver (``tests/support/network_ops.py``) that checks
every ``net.sync`` body exactly as a real host does and keeps what the host would carry: a
test reads, per host, its networks, its own ports, where it tunnels the others, and its
floating IPs.  The network driver itself is tested on real kernels in ``tests/network``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from frontend.db.models import Hypervisor, Instance
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api
from tests.support.qcow2 import fake_qcow2
from tests.support.waiting import until

pytestmark = pytest.mark.slow  # a tree and hosts in process: a few seconds each


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    yield from make_cloud(db_url, tmp_path / "frontend", hosts=3, networks=True, max_attempts=1)


def _tenant(cloud: Cloud, name: str = "acme") -> Api:
    admin = cloud.admin
    if admin.get("/v1/flavors/small").status_code == 404:
        admin.ok("post", "/v1/flavors", 201, json={"name": "small", "vcpus": 1, "memory_mb": 256, "disk_gb": 1})
        admin.ok("post", "/v1/networks", 201, json={"name": "public", "external": True})
        admin.ok("post", "/v1/subnets", 201, json={"name": "public-sub", "network": "public",
                                                   "cidr": "203.0.113.0/24"})
    api = admin.tenant(name)
    image = api.ok("post", "/v1/images", 201, json={"name": "tiny", "format": "qcow2"})
    api.ok("put", f"/v1/images/{image['id']}/file", content=fake_qcow2(64 << 20))
    api.ok("post", "/v1/networks", 201, json={"name": "net"})
    api.ok("post", "/v1/subnets", 201, json={"name": "sub", "network": "net", "cidr": "10.0.0.0/24"})
    return api


def _launch(cloud: Cloud, api: Api, name: str, **extra: Any) -> dict[str, Any]:
    """The instance, with ``hypervisor`` its host's name (tenants are shown an alias)."""
    body = {"name": name, "flavor": "small", "image": "tiny", "nics": [{"network": "net"}], **extra}
    accepted = api.ok("post", "/v1/instances", 202, json=body)
    task = cloud.wait_task(api, accepted["task"]["id"])
    assert task["status"] == "succeeded", task
    instance = dict(api.ok("get", f"/v1/instances/{accepted['resource']['id']}"))
    with cloud.frontend.db.read() as session:
        row = session.get(Instance, instance["id"])
        assert row is not None
        host = session.get(Hypervisor, row.hypervisor_id)
        assert host is not None
        instance["hypervisor"] = host.name
    return instance


def _done(cloud: Cloud, api: Api, accepted: dict[str, Any]) -> dict[str, Any]:
    task = cloud.wait_task(api, accepted["task"]["id"])
    assert task["status"] == "succeeded", task
    return task


def _carried(cloud: Cloud) -> dict[str, dict[str, Any]]:
    return {host: dict(n.networks) for host, n in cloud.networks.items()}


def test_a_network_reaches_exactly_the_hosts_of_its_ports(cloud: Cloud) -> None:
    api = _tenant(cloud)
    net = api.ok("get", "/v1/networks/net")["id"]
    web = _launch(cloud, api, "web")
    db = _launch(cloud, api, "db")
    hosts = {web["hypervisor"], db["hypervisor"]}
    carried = _carried(cloud)
    for host, networks in carried.items():
        if host in hosts:
            assert set(networks) == {net}
        else:
            assert networks == {}, f"{host} has no port of the network and must know nothing of it"
    if len(hosts) == 2:  # the scheduler spread them: each tunnels to the other
        mine = carried[web["hypervisor"]][net]
        assert len(mine["ports"]) == 1 and len(mine["remote"]) == 1
    # Not even told of it: no body to another host names the network.
    assert not [b for h, n in cloud.networks.items() if h not in hosts for b in n.bodies
                if net in (b["scope"] or []) or any(x["id"] == net for x in b["networks"])]

    # Deleting the last instance of a host takes the network off it.
    _done(cloud, api, api.ok("delete", "/v1/instances/web", 202))
    assert net not in _carried(cloud)[web["hypervisor"]] or web["hypervisor"] == db["hypervisor"]
    _done(cloud, api, api.ok("delete", "/v1/instances/db", 202))
    assert all(networks == {} for networks in _carried(cloud).values())


def test_routers_and_floating_ips_are_tasks_that_reach_the_instance_host(cloud: Cloud) -> None:
    api = _tenant(cloud)
    net = api.ok("get", "/v1/networks/net")["id"]
    vm1 = _launch(cloud, api, "vm1")
    router = api.ok("post", "/v1/routers", 202, json={"name": "r", "network": "net"})
    task = _done(cloud, api, router)
    assert [s["name"] for s in task["steps"]] == ["sync.plan", "sync"]
    assert _carried(cloud)[vm1["hypervisor"]][net]["router"] is True
    assert _carried(cloud)[vm1["hypervisor"]][net]["snat"] is True

    fip = api.ok("post", "/v1/floating-ips", 201, json={})
    ports = [p for p in api.ok("get", "/v1/ports")["items"] if p["instance_id"] == vm1["id"]]
    _done(cloud, api, api.ok("patch", f"/v1/floating-ips/{fip['id']}", 202, json={"port": ports[0]["id"]}))
    assert _carried(cloud)[vm1["hypervisor"]][net]["floating"] == [(fip["address"], ports[0]["id"])]

    # Moved to another instance (on another host when the scheduler spreads them): off the
    # first host, onto the second, in one task.
    vm2 = _launch(cloud, api, "vm2")
    ports2 = [p for p in api.ok("get", "/v1/ports")["items"] if p["instance_id"] == vm2["id"]]
    _done(cloud, api, api.ok("patch", f"/v1/floating-ips/{fip['id']}", 202, json={"port": ports2[0]["id"]}))
    carried = _carried(cloud)
    assert carried[vm2["hypervisor"]][net]["floating"] == [(fip["address"], ports2[0]["id"])]
    if vm2["hypervisor"] != vm1["hypervisor"]:
        assert carried[vm1["hypervisor"]][net]["floating"] == []

    _done(cloud, api, api.ok("delete", f"/v1/floating-ips/{fip['id']}", 202))
    assert carried_floating(cloud, net) == []
    _done(cloud, api, api.ok("delete", "/v1/routers/r", 202))
    assert _carried(cloud)[vm1["hypervisor"]][net]["router"] is False


def carried_floating(cloud: Cloud, net: str) -> list[Any]:
    return [f for networks in _carried(cloud).values() for f in networks.get(net, {}).get("floating", [])]


def test_a_host_that_refuses_its_network_fails_the_launch_there_and_keeps_nothing(cloud: Cloud) -> None:
    api = _tenant(cloud)
    for network in cloud.networks.values():
        network.fail = "the kernel said no"
    accepted = api.ok("post", "/v1/instances", 202, json={"name": "vm", "flavor": "small", "image": "tiny",
                                                          "nics": [{"network": "net"}]})
    task = cloud.wait_task(api, accepted["task"]["id"])
    assert task["status"] == "failed" and "its network: the kernel said no" in task["error"]
    assert all(not c.instances for c in cloud.computes.values())  # the launch was undone on the host


def test_a_host_that_rejoins_gets_its_whole_state(cloud: Cloud) -> None:
    api = _tenant(cloud)
    net = api.ok("get", "/v1/networks/net")["id"]
    vm = _launch(cloud, api, "vm")
    host = cloud.networks[vm["hypervisor"]]
    host.networks.clear()  # as a backend restarted without its state would be
    cloud.hosts.host_networks.rejoined([vm["hypervisor"]])
    until(lambda: net in host.networks, 10, "the host to get its networks back")
    assert host.bodies[-1]["scope"] is None


def test_a_group_change_reaches_the_hosts_of_its_ports_and_of_the_ports_naming_it(cloud: Cloud) -> None:
    api = _tenant(cloud)
    app = api.ok("post", "/v1/security-groups", 201, json={"name": "app"})
    ops = api.ok("post", "/v1/security-groups", 201, json={"name": "ops"})
    web = _launch(cloud, api, "web", security_groups=["app"], server_group=None)
    db = _launch(cloud, api, "db")
    if web["hypervisor"] == db["hypervisor"]:
        pytest.skip("the scheduler put both on one host")  # spread by free memory: it does not
    idle = next(h for h in cloud.networks if h not in (web["hypervisor"], db["hypervisor"]))
    net = api.ok("get", "/v1/networks/net")["id"]
    web_ip, db_ip = web["ports"][0]["ip_address"], db["ports"][0]["ip_address"]
    assert cloud.networks[web["hypervisor"]].networks[net]["port_groups"] == {web_ip: [app["id"]]}

    def received() -> dict[str, int]:
        return {h: len(n.bodies) for h, n in cloud.networks.items()}

    # A rule of app naming ops: only web's host hears of it, with ops' members (none yet).
    before = received()
    api.ok("post", "/v1/security-groups/app/rules", 201, json={"direction": "ingress", "protocol": "tcp",
                                                               "port_min": 5432, "remote_group": "ops"})
    web_host = cloud.networks[web["hypervisor"]]
    until(lambda: web_host.groups.get(app["id"], (0, 0, None))[1] == 2, 10, "app's new rule on web's host")
    assert web_host.groups[ops["id"]][2] == []
    assert received()[db["hypervisor"]] == before[db["hypervisor"]]
    assert received()[idle] == before[idle]

    # db's port joins ops: db's host firewalls it so, and web's host learns ops' new member.
    port = db["ports"][0]["id"]
    api.ok("patch", f"/v1/ports/{port}", json={"security_groups": ["default", "ops"]})
    until(lambda: web_host.groups[ops["id"]][2] == [db_ip], 10, "ops' new member on web's host")
    db_host = cloud.networks[db["hypervisor"]]
    until(lambda: sorted(db_host.networks[net]["port_groups"][db_ip]) ==
          sorted([ops["id"], api.ok("get", "/v1/security-groups/default")["id"]]), 10, "db's groups on its host")
    assert received()[idle] == before[idle]
