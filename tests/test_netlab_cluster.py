"""Namespace hypervisors as real processes: a local cloud whose backends each run in a network
namespace of a lab (``localcluster/netlab.py``) with the network driver, driven through the tree.

The frontend, its API and the agent stay in this machine's namespace and listen on the lab's
management address; the backends reach them from their namespaces.  ``net.sync`` goes through
the frontend's control socket down the tree, as the frontend multicasts it (its state has no
network here: the test's body comes after the frontend's own full sync of each host); the instances
are namespaces whose eth0 is the peer of the port's tap, made where libvirtd would make it
(this machine's namespace), so the driver has to take it (``tap_netns``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from pyroute2 import IPRoute, NetNS, netns

from backend.network import names
from localcluster import LocalCluster
from localcluster.netlab import Instance, run_in
from tests.support.cloudapi import running, until

pytestmark = [pytest.mark.slow, pytest.mark.root]

TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0}
VNI = 1001


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    c = LocalCluster(tmp_path / "cluster", agents=1, backends=3, tree=TREE, ops_modules=["backend.network"],
                     netlab=True)
    with running(c):
        yield c


def submit(c: LocalCluster, command: str, args: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
    reply = c.control({"op": "submit", "command": command, "args": args, "hosts": hosts, "timeout": 30.0},
                      timeout=60.0)
    return dict(reply["results"])


def _port(c: LocalCluster, host: str, subnet_id: str, ip: str) -> tuple[dict[str, Any], Instance]:
    """A port bound on ``host``, and its instance, its tap where libvirtd would make it."""
    assert c.lab is not None
    port = {"id": str(uuid.uuid4()), "subnet_id": subnet_id, "mac": "52:54:00:" + ":".join(
        f"{b:02x}" for b in os.urandom(3)), "ip": ip, "vtep": c.hypervisors[host].vtep}
    return port, c.lab.instance(None, port["id"], port["mac"])


def _machine_links() -> set[str]:
    with IPRoute() as ipr:
        return {link.get("IFLA_IFNAME") for link in ipr.get_links()}


def _vni_links(namespace: str) -> list[str]:
    with NetNS(namespace) as ns:
        return [n for n in (m.get("IFLA_IFNAME") for m in ns.get_links()) if names.vni_of(n) is not None]


def _pids_in(inodes: set[int]) -> list[int]:
    pids = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _converged(c: LocalCluster) -> set[str]:
    """The hosts the frontend has sent their whole network state, and which took it."""
    hosts = set()
    for line in c.log_text("frontend").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "host_networks_converged":
                hosts.add(record["host"])
    return hosts


def _ping(instance: Instance, ip: str) -> bool:
    return run_in(instance.netns, "ping", "-c", "2", "-W", "1", "-i", "0.2", ip, check=False).returncode == 0


def test_namespace_backends_attach_through_the_tree_and_their_instances_talk_through_vxlan(
        cluster: LocalCluster) -> None:
    lab = cluster.lab
    assert lab is not None and lab.management_address is not None
    hosts = cluster.backend_names

    # Every node is up, the backends below the agent, each backend a process inside its own
    # hypervisor's namespace, which reports the VTEP it was given.
    nodes = {n["node_id"]: n for n in cluster.tree_status()}
    assert {n: nodes[n]["state"] for n in ["agent0", *hosts]} == {n: "up" for n in ["agent0", *hosts]}
    assert {nodes[h]["parent"] for h in hosts} == {"agent0"}
    for host in hosts:
        hypervisor = cluster.hypervisors[host]
        assert os.stat(f"/proc/{cluster.procs[host].pid}/ns/net").st_ino == os.stat(hypervisor.netns_path).st_ino
    info = submit(cluster, "info", {}, hosts)
    assert {h: r["payload"]["vtep"] for h, r in info.items()} == {h: cluster.hypervisors[h].vtep for h in hosts}
    # The frontend registers each host and sends it its whole state (no network here): a body sent
    # before that would be wiped by it, since the frontend's state knows nothing of this network.
    until(lambda: set(hosts) <= _converged(cluster), 60, "the frontend's full sync of every host")

    # A network with instances on host000 and host001; one body for both, as the frontend multicasts it.
    network_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
    port_a, a = _port(cluster, hosts[0], subnet_id, "10.0.0.11")
    port_b, b = _port(cluster, hosts[1], subnet_id, "10.0.0.12")
    body = {"revision": time.time_ns(), "scope": [network_id], "networks": [{
        "id": network_id, "router": True, "snat": False, "external": None,
        "subnets": [{"id": subnet_id, "vni": VNI, "cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "dhcp": True,
                     "dns_servers": []}],
        "ports": [port_a, port_b], "floating_ips": []}]}
    synced = submit(cluster, "net.sync", body, hosts[:2])
    assert {h: (r["status"], r["payload"]) for h, r in synced.items()} == {
        h: ("ok", {"networks": [network_id], "stale": []}) for h in hosts[:2]}, synced

    # The drivers took the taps from this machine's namespace into their hypervisors'.
    assert not {a.tap, b.tap} & _machine_links()
    assert lab.dhcp(a)["ip"] == "10.0.0.11" and lab.dhcp(b)["ip"] == "10.0.0.12"
    assert _ping(a, "10.0.0.12") and _ping(b, "10.0.0.11")
    assert _vni_links(cluster.hypervisors[hosts[2]].netns) == []  # no port there, nothing of the network

    # Stopped, the cloud leaves nothing: no namespace, link or address of the lab, no process in
    # its namespaces (the backends' dnsmasqs included).
    ours = [n for n in netns.listnetns() if n.startswith(lab.prefix)]
    assert any("-router-" in n for n in ours)
    inodes = {os.stat(f"/run/netns/{n}").st_ino for n in ours}
    dnsmasqs = [int((cluster.workdir / "backends" / h / "network" / "dhcp" / str(VNI) / "pid").read_text())
                for h in hosts[:2]]
    cluster.stop()
    assert not [n for n in netns.listnetns() if n.startswith(lab.prefix)]
    assert not {a.tap, b.tap, lab.management_link} & _machine_links()
    with IPRoute() as ipr:
        assert lab.management_address not in {m.get("IFA_ADDRESS") for m in ipr.get_addr()}
    assert not _pids_in(inodes)
    assert not [pid for pid in dnsmasqs if _alive(pid)]
