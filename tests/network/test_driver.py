"""The network driver on real kernels: namespace hypervisors on an underlay bridge, namespace instances.

Each test builds its own underlay (``tests/support/netns.py``) and drives one
``NetworkDriver`` per hypervisor, working in that hypervisor's namespace, with ``net.sync``
bodies as the frontend sends them.  Packets are real: DHCP from busybox udhcpc, ping.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from pyroute2 import NetNS

from backend.network import names
from backend.network.driver import NetworkDriver, NetworkSettings
from backend.network.spec import desired_state
from tests.support.netns import EXTERNAL_BRIDGE, Hypervisor, Instance, Underlay, connect, run_in, serve
from tests.support.waiting import until

pytestmark = [pytest.mark.root]


@pytest.fixture
def underlay(tmp_path: Path) -> Iterator[Underlay]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    with Underlay(tmp_path) as u:
        yield u


class Cloud:
    """Hypervisors with their drivers, and the frontend's view: networks, subnets and bound ports."""

    def __init__(self, underlay: Underlay, tmp: Path, hosts: int) -> None:
        self.underlay = underlay
        self.hosts = [underlay.hypervisor() for _ in range(hosts)]
        self.drivers = {h.name: NetworkDriver(NetworkSettings(
            host=h.name, vtep=h.vtep, state_dir=tmp / h.name, namespace_prefix=f"{h.name}-", netns=h.netns,
            external_interface=EXTERNAL_BRIDGE)) for h in self.hosts}
        self.networks: dict[str, dict[str, Any]] = {}
        #: port id -> (network id, subnet id, mac, ip, host name)
        self.ports: dict[str, tuple[str, str, str, str, str]] = {}

    def close(self) -> None:
        for driver in self.drivers.values():
            driver.close()

    def network(self, router: bool = True, snat: bool = False) -> str:
        network_id = str(uuid.uuid4())
        self.networks[network_id] = {"router": router, "snat": snat, "subnets": [], "floating": {},
                                     "external": self.underlay.external_net if snat else None}
        return network_id

    def subnet(self, network_id: str, cidr: str, vni: int, dhcp: bool = True) -> str:
        subnet_id = str(uuid.uuid4())
        gateway = cidr.rsplit(".", 1)[0] + ".1"
        self.networks[network_id]["subnets"].append({"id": subnet_id, "vni": vni, "cidr": cidr, "gateway": gateway,
                                                     "dhcp": dhcp, "dns_servers": []})
        return subnet_id

    def port(self, network_id: str, subnet_id: str, ip: str, host: Hypervisor) -> Instance:
        port_id = str(uuid.uuid4())
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))
        self.ports[port_id] = (network_id, subnet_id, mac, ip, host.name)
        return self.underlay.instance(host, port_id, mac)

    def floating(self, network_id: str, address: str, instance: Instance) -> None:
        """Associate ``address`` with the port of ``instance`` (moving it from wherever it was)."""
        port_id = next(pid for pid, p in self.ports.items() if p[2] == instance.mac)
        self.networks[network_id]["floating"][address] = port_id

    def body(self, host: Hypervisor, scope: list[str] | None = None) -> dict[str, Any]:
        """``net.sync`` for ``host``: every network with a port on it (or those of ``scope`` only),
        as the frontend builds it."""
        vteps = {h.name: h.vtep for h in self.hosts}
        networks = []
        for network_id, network in self.networks.items():
            ports = [(pid, p) for pid, p in self.ports.items() if p[0] == network_id]
            if not any(p[4] == host.name for _, p in ports) or (scope is not None and network_id not in scope):
                continue
            networks.append({
                "id": network_id, "router": network["router"], "snat": network["snat"],
                "external": network["external"], "subnets": network["subnets"],
                "floating_ips": [{"address": a, "port_id": pid} for a, pid in network["floating"].items()],
                "ports": [{"id": pid, "subnet_id": p[1], "mac": p[2], "ip": p[3], "vtep": vteps[p[4]]}
                          for pid, p in ports]})
        return {"revision": time.time_ns(), "scope": scope, "networks": networks}

    def sync(self, scope: list[str] | None = None) -> None:
        for host in self.hosts:
            self.drivers[host.name].sync(desired_state(self.body(host, scope), host.vtep))

    def unbind(self, instance: Instance) -> None:
        del self.ports[next(pid for pid, p in self.ports.items() if p[2] == instance.mac)]


@pytest.fixture
def cloud3(underlay: Underlay, tmp_path: Path) -> Iterator[Cloud]:
    cloud = Cloud(underlay, tmp_path, 3)
    try:
        yield cloud
    finally:
        cloud.close()


def _ping(instance: Instance, ip: str, count: int = 2) -> bool:
    return run_in(instance.netns, "ping", "-c", str(count), "-W", "1", "-i", "0.2", ip, check=False).returncode == 0


def _links(netns: str) -> dict[str, Any]:
    with NetNS(netns) as ns:
        return {msg.get("IFLA_IFNAME"): msg for msg in ns.get_links()}


def test_instances_on_two_hosts_get_dhcp_and_reach_each_other_through_vxlan(cloud3: Cloud) -> None:
    hv1, hv2, hv3 = cloud3.hosts
    net = cloud3.network()
    subnet = cloud3.subnet(net, "10.0.0.0/24", vni=1001)
    a = cloud3.port(net, subnet, "10.0.0.11", hv1)
    b = cloud3.port(net, subnet, "10.0.0.12", hv2)
    cloud3.sync()

    lease = cloud3.underlay.dhcp(a)
    assert lease == {"ip": "10.0.0.11", "mask": "24", "router": "10.0.0.1", "mtu": "1450"}
    assert cloud3.underlay.dhcp(b)["ip"] == "10.0.0.12"
    assert _ping(a, "10.0.0.12") and _ping(b, "10.0.0.11")
    assert _ping(a, "10.0.0.1")  # the gateway, answered by hv1's own router namespace

    # The same gateway IP on both hosts, a MAC of each host's own.
    macs = set()
    for host in (hv1, hv2):
        ns = names.router_namespace(f"{host.name}-", net)
        macs.add(_links(ns)[names.router_leg(1001)].get("IFLA_ADDRESS"))
    assert len(macs) == 2

    # hv3 has no port of the network: nothing of it.
    assert not [n for n in _links(hv3.netns) if names.vni_of(n) is not None]
    # hv1 forwards b's MAC to hv2's VTEP, and only that; no flood entry.
    with NetNS(hv1.netns) as ns:
        index = ns.link_lookup(ifname=names.vxlan(1001))[0]
        entries = {(m.get("NDA_LLADDR"), m.get("NDA_DST")) for m in ns.fdb("dump", ifindex=index) if m.get("NDA_DST")}
    assert entries == {(b.mac, hv2.vtep)}


def test_a_second_sync_changes_nothing(cloud3: Cloud) -> None:
    hv1, hv2, _ = cloud3.hosts
    net = cloud3.network()
    subnet = cloud3.subnet(net, "10.0.0.0/24", vni=1002)
    a = cloud3.port(net, subnet, "10.0.0.11", hv1)
    cloud3.port(net, subnet, "10.0.0.12", hv2)
    cloud3.sync()
    before = {name: msg["index"] for name, msg in _links(hv1.netns).items()}
    pid = (cloud3.drivers[hv1.name].settings.state_dir / "dhcp/1002/pid").read_text()
    cloud3.sync()
    assert {name: msg["index"] for name, msg in _links(hv1.netns).items()} == before
    assert (cloud3.drivers[hv1.name].settings.state_dir / "dhcp/1002/pid").read_text() == pid
    assert cloud3.underlay.dhcp(a)["ip"] == "10.0.0.11"

    # A body built before the last one (two syncs crossing on the way) is not applied over it.
    old = {"revision": 1, "scope": [net], "networks": []}
    assert cloud3.drivers[hv1.name].sync(desired_state(old, hv1.vtep))["stale"] == [net]
    assert {name: msg["index"] for name, msg in _links(hv1.netns).items()} == before


def test_scoped_syncs_change_only_the_ports_that_came_or_went(cloud3: Cloud) -> None:
    """What the frontend sends as ports come and go: bodies scoped to one network, which a host
    applies by the ports that changed since its last sync; a full sync re-reads the kernel."""
    hv1, hv2, _ = cloud3.hosts
    net = cloud3.network()
    subnet = cloud3.subnet(net, "10.0.0.0/24", vni=1003)
    a = cloud3.port(net, subnet, "10.0.0.11", hv1)
    cloud3.sync([net])
    b = cloud3.port(net, subnet, "10.0.0.12", hv1)
    c = cloud3.port(net, subnet, "10.0.0.13", hv2)
    cloud3.sync([net])
    for instance in (a, b, c):
        cloud3.underlay.dhcp(instance)
    assert _ping(a, "10.0.0.12") and _ping(a, "10.0.0.13")

    def fdb() -> set[tuple[str, str]]:
        with NetNS(hv1.netns) as ns:
            index = ns.link_lookup(ifname=names.vxlan(1003))[0]
            return {(m.get("NDA_LLADDR"), m.get("NDA_DST")) for m in ns.fdb("dump", ifindex=index)
                    if m.get("NDA_DST")}

    def master(instance: Instance) -> Any:
        return _links(hv1.netns)[instance.tap].get("IFLA_MASTER")

    assert fdb() == {(c.mac, hv2.vtep)}
    before = {name: msg["index"] for name, msg in _links(hv1.netns).items()}
    cloud3.unbind(b)
    cloud3.unbind(c)
    cloud3.sync([net])
    assert master(b) is None and master(a) is not None
    assert fdb() == set()
    assert {name: msg["index"] for name, msg in _links(hv1.netns).items()} == before  # nothing else rebuilt
    assert _ping(a, "10.0.0.1")

    # An entry lost behind the driver's back comes back with the next full sync.
    d = cloud3.port(net, subnet, "10.0.0.14", hv2)
    cloud3.sync([net])
    assert fdb() == {(d.mac, hv2.vtep)}
    with NetNS(hv1.netns) as ns:
        ns.fdb("del", ifindex=ns.link_lookup(ifname=names.vxlan(1003))[0], lladdr=d.mac, dst=hv2.vtep)
    cloud3.sync()
    assert fdb() == {(d.mac, hv2.vtep)}


def test_tenants_with_the_same_cidr_stay_apart(cloud3: Cloud) -> None:
    hv1, hv2, _ = cloud3.hosts
    red, blue = cloud3.network(), cloud3.network()
    red_subnet = cloud3.subnet(red, "10.0.0.0/24", vni=2001)
    blue_subnet = cloud3.subnet(blue, "10.0.0.0/24", vni=2002)
    red_a = cloud3.port(red, red_subnet, "10.0.0.11", hv1)
    red_b = cloud3.port(red, red_subnet, "10.0.0.12", hv2)
    blue_a = cloud3.port(blue, blue_subnet, "10.0.0.11", hv1)
    blue_c = cloud3.port(blue, blue_subnet, "10.0.0.13", hv2)
    cloud3.sync()
    for instance in (red_a, red_b, blue_a, blue_c):
        cloud3.underlay.dhcp(instance)
    assert _ping(red_a, "10.0.0.12") and _ping(blue_a, "10.0.0.13")
    # Each tenant sees only its own: red has no 10.0.0.13, blue no 10.0.0.12.
    assert not _ping(red_a, "10.0.0.13", count=1)
    assert not _ping(blue_a, "10.0.0.12", count=1)
    neighbours = run_in(red_a.netns, "ip", "neigh", "show", "10.0.0.12").stdout
    assert red_b.mac in neighbours


def test_two_subnets_of_a_network_route_through_the_local_router(cloud3: Cloud) -> None:
    hv1, hv2, _ = cloud3.hosts
    net = cloud3.network()
    front = cloud3.subnet(net, "10.0.1.0/24", vni=3001)
    back = cloud3.subnet(net, "10.0.2.0/24", vni=3002)
    web = cloud3.port(net, front, "10.0.1.10", hv1)
    db_local = cloud3.port(net, back, "10.0.2.10", hv1)
    db_remote = cloud3.port(net, back, "10.0.2.20", hv2)
    cloud3.sync()
    for instance in (web, db_local, db_remote):
        cloud3.underlay.dhcp(instance)
    assert _ping(web, "10.0.2.10") and _ping(web, "10.0.2.20") and _ping(db_remote, "10.0.1.10")


def test_removing_the_last_port_removes_everything_and_dhcp_comes_back_when_killed(cloud3: Cloud) -> None:
    hv1, hv2, _ = cloud3.hosts
    net = cloud3.network()
    subnet = cloud3.subnet(net, "10.0.0.0/24", vni=4001)
    a = cloud3.port(net, subnet, "10.0.0.11", hv1)
    cloud3.port(net, subnet, "10.0.0.12", hv2)
    cloud3.sync()
    driver = cloud3.drivers[hv1.name]
    pid = int((driver.settings.state_dir / "dhcp/4001/pid").read_text())
    os.kill(pid, signal.SIGKILL)

    def restarted() -> int | None:
        driver.watch_once()  # what the driver's watcher thread does every 2 s
        path = driver.settings.state_dir / "dhcp/4001/pid"
        new = int(path.read_text()) if path.exists() else None
        return new if new != pid else None

    new_pid = until(restarted, 5, "dnsmasq to be restarted")
    assert cloud3.underlay.dhcp(a)["ip"] == "10.0.0.11"

    # A backend restarted: the new driver adopts the running dnsmasq and changes nothing.
    before = {name: msg["index"] for name, msg in _links(hv1.netns).items()}
    driver.close()
    cloud3.drivers[hv1.name] = driver = NetworkDriver(driver.settings)
    cloud3.sync()
    assert {name: msg["index"] for name, msg in _links(hv1.netns).items()} == before
    assert int((driver.settings.state_dir / "dhcp/4001/pid").read_text()) == new_pid

    cloud3.ports.clear()
    cloud3.sync()
    for host in (hv1, hv2):
        left = [n for n in _links(host.netns) if names.vni_of(n) is not None]
        assert left == [], f"{host.name} kept {left}"
    assert not [n for n in os.listdir("/run/netns") if "-router-" in n and n.startswith(cloud3.underlay.prefix)]
    assert not os.path.exists(f"/proc/{new_pid}") or "Z" in open(f"/proc/{new_pid}/stat").read().split()[2]


def test_egress_leaves_with_the_host_external_address(cloud3: Cloud) -> None:
    hv1, hv2, _ = cloud3.hosts
    net = cloud3.network(snat=True)
    subnet = cloud3.subnet(net, "10.0.0.0/24", vni=5001)
    a = cloud3.port(net, subnet, "10.0.0.11", hv1)
    b = cloud3.port(net, subnet, "10.0.0.12", hv2)
    cloud3.sync()
    for instance in (a, b):
        cloud3.underlay.dhcp(instance)
    server, peers = serve(cloud3.underlay.outside, 8080, b"outside")
    try:
        assert connect(a.netns, "203.0.113.1", 8080) == b"outside"
        assert connect(b.netns, "203.0.113.1", 8080) == b"outside"
    finally:
        server.close()
    # Each instance leaves by its own host: no central router.
    assert peers == [hv1.external_address, hv2.external_address]


def test_a_floating_ip_reaches_its_instance_and_follows_it_to_another_host(cloud3: Cloud) -> None:
    hv1, hv2, _ = cloud3.hosts
    net = cloud3.network(snat=True)
    subnet = cloud3.subnet(net, "10.0.0.0/24", vni=6001)
    a = cloud3.port(net, subnet, "10.0.0.11", hv1)
    b = cloud3.port(net, subnet, "10.0.0.12", hv2)
    cloud3.floating(net, "203.0.113.100", a)
    cloud3.sync()
    for instance in (a, b):
        cloud3.underlay.dhcp(instance)
    servers = [serve(a.netns, 22, b"a"), serve(b.netns, 22, b"b"), serve(cloud3.underlay.outside, 8080, b"out")]
    try:
        assert connect(cloud3.underlay.outside, "203.0.113.100", 22) == b"a"
        assert connect(a.netns, "203.0.113.1", 8080) == b"out"
        assert servers[2][1] == ["203.0.113.100"]  # a leaves with its floating IP, not its host's address

        cloud3.floating(net, "203.0.113.100", b)
        cloud3.sync()
        until(lambda: connect(cloud3.underlay.outside, "203.0.113.100", 22, timeout=0.5) == b"b", 2.0,
              "the floating IP to answer from its new host")
        assert servers[1][1][-1] == "203.0.113.1"  # DNAT keeps the caller's address
    finally:
        for server, _ in servers:
            server.close()
    with NetNS(names.router_namespace(f"{hv1.name}-", net)) as ns:
        assert not [m for m in ns.get_addr(label=names.EXTERNAL_LEG)]  # hv1 holds the address no more

    # The last port gone, nothing of the router stays: its namespace and the host ends of its
    # transit and external veths (a handle kept open in the namespace would keep them alive).
    cloud3.ports.clear()
    cloud3.sync()
    for host in (hv1, hv2):
        left = [n for n in _links(host.netns) if names.OWNED.match(n) or names.OWNED_PER_NETWORK.match(n)]
        assert left == [], f"{host.name} kept {left}"
