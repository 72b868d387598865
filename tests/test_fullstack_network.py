"""Tenant networks through the whole stack, with real guests: API -> frontend -> tree -> backends
in namespace hypervisors (``localcluster/netlab.py``) -> the network driver and libvirt.

Three hypervisors, each a network namespace on a lab underlay with a real backend process inside
running the compute and network drivers; libvirtd in this machine's namespace makes the guests'
taps, which the network drivers take into their hypervisors.  The guests are the tiny TCG guest
(``localcluster/guest.py``): it asks DHCP for its address, gateway and MTU and reports the lease on
its serial console, runs a user-data script, and answers ping.  The outside is the lab's
namespace on the external network (203.0.113.1).

Only the API is used to change the cloud; the kernel (pyroute2, tcpdump in a namespace, /proc)
is only looked at.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from pyroute2 import NetNS

from backend.network import names
from backend.ports import tap_name
from localcluster import LocalCluster, libvirtd
from localcluster import guest as tiny
from localcluster.netlab import netns_argv, run_in
from tests.support.netns import connect, links, tenant_leftovers
from tests.support.cloudapi import console, console_count, finished, offer_tiny, ok, running, tenant_client, until

pytestmark = [pytest.mark.slow, pytest.mark.root]

CACHE = Path("/var/tmp/cloudland-guest")
TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0}
BOOT_TIMEOUT = 120.0
#: the lab's underlay MTU (a veth's 1500) less VXLAN's 50 bytes
TENANT_MTU = 1450
OUTSIDE = "203.0.113.1"


@pytest.fixture(scope="module")
def guest(libvirt_daemons: None) -> tiny.Guest:
    return tiny.build(CACHE)


@pytest.fixture
def cluster(tmp_path: Path, guest: tiny.Guest) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", agents=1, backends=3, tree=TREE,
                     ops_modules=["backend.compute", "backend.network"], netlab=True,
                     backend_config={"compute": {"domain_type": "qemu", "stop_timeout_s": 10.0,
                                                 "cmdline": tiny.CMDLINE}})
    try:
        with running(c):
            yield c
    finally:
        libvirtd.purge_under(c.workdir)


def _lease(api: httpx.Client, instance: str) -> str | None:
    """The guest's ``CLOUDLAND-GUEST-IP`` line, once it has a lease."""
    return next((line for line in console(api, instance).splitlines() if line.startswith(tiny.IP)), None)


def _port_of(api: httpx.Client, instance: str) -> dict[str, Any]:
    ports = ok(api.get(f"/v1/instances/{instance}"))["ports"]
    assert len(ports) == 1, ports
    return dict(ports[0])


def _pings(*targets: str, keep_pinging: str | None = None, neighbour: bool = False) -> str:
    """User data that pings each target until it answers (or a minute passes), printing ``ANSWERS
    <ip>`` (and with ``neighbour`` its ARP entry, ``NEIGHBOUR <ip> ... lladdr <mac>``), then pings
    ``keep_pinging`` forever in the background."""
    lines = ["#!/bin/sh"]
    for ip in targets:
        lines += [f"n=0; until ping -c 1 -W 1 {ip} >/dev/null 2>&1; do n=$((n + 1)); [ $n -lt 120 ] || break; "
                  "sleep 0.5; done",
                  f"ping -c 1 -W 1 {ip} >/dev/null 2>&1 && echo 'ANSWERS {ip}'"]
        if neighbour:
            lines.append(f"echo \"NEIGHBOUR $(ip neigh show {ip})\"")
    if keep_pinging:
        lines.append(f"while :; do ping -c 1 -W 1 {keep_pinging} >/dev/null 2>&1; sleep 0.1; done &")
    return "\n".join(lines) + "\n"


def _ping(namespace: str, ip: str) -> bool:
    return run_in(namespace, "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0


def _vxlan_packets(namespace: str, seconds: int = 3) -> list[str]:
    """VXLAN packets seen on the hypervisor's underlay link in ``seconds``."""
    proc = subprocess.run([*netns_argv(namespace), "timeout", str(seconds), "tcpdump", "-l", "-nn", "-e", "-i", "ul0",
                           "udp", "port", "4789"], capture_output=True, text=True, timeout=seconds + 30, check=False)
    assert "listening on ul0" in proc.stderr, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.strip()]


def _fixed_ips_on_external_leg(namespace: str) -> set[str]:
    with NetNS(namespace) as ns:
        return {str(m.get("IFA_ADDRESS")) for m in ns.get_addr(label=names.EXTERNAL_LEG)}


def test_guests_on_namespace_hypervisors_get_a_tenant_network_through_the_api(cluster: LocalCluster,
                                                                               guest: tiny.Guest) -> None:
    lab = cluster.lab
    assert lab is not None
    api = offer_tiny(cluster, guest, public=True)
    hv = {name: cluster.hypervisors[name] for name in cluster.backend_names}

    # The operator's external network (the lab's 203.0.113.0/24), a tenant network with a router
    # doing SNAT, and a server group that puts the two guests on different hypervisors.
    ok(api.post("/v1/networks", json={"name": "public", "external": True}), 201)
    ok(api.post("/v1/subnets", json={"name": "public-v4", "network": "public", "cidr": "203.0.113.0/24",
                                      "gateway": OUTSIDE, "dhcp": False}), 201)
    ok(api.post("/v1/networks", json={"name": "blue"}), 201)
    ok(api.post("/v1/subnets", json={"name": "blue-a", "network": "blue", "cidr": "10.0.0.0/24"}), 201)
    finished(api, ok(api.post("/v1/routers", json={"name": "blue-r", "network": "blue", "snat": True}), 202))
    ok(api.post("/v1/server-groups", json={"name": "spread", "policy": "anti-affinity"}), 201)
    # Ports are firewalled: the default group lets in only its own members; the outside may ping.
    ok(api.post("/v1/security-groups", json={"name": "pingable"}), 201)
    ok(api.post("/v1/security-groups/pingable/rules", json={"direction": "ingress", "protocol": "icmp",
                                                            "icmp_type": 8}), 201)

    launch = {"flavor": "tiny", "image": "tiny", "server_group": "spread", "nics": [{"subnet": "blue-a"}],
              "security_groups": ["default", "pingable"]}
    finished(api, ok(api.post("/v1/instances", json={"name": "vm-a", **launch}), 202))
    ip_a = _port_of(api, "vm-a")["ip_address"]
    # vm-b pings vm-a, then the outside, then keeps pinging vm-a (traffic to capture).
    script = _pings(ip_a, OUTSIDE, keep_pinging=ip_a)
    finished(api, ok(api.post("/v1/instances", json={"name": "vm-b", "user_data": script, **launch}), 202))
    ip_b = _port_of(api, "vm-b")["ip_address"]
    host_a = ok(api.get("/v1/instances/vm-a"))["hypervisor"]
    host_b = ok(api.get("/v1/instances/vm-b"))["hypervisor"]
    assert host_a != host_b
    (host_c,) = set(hv) - {host_a, host_b}

    # Each guest's DHCP lease: its port's address, the subnet's gateway and the tenant MTU.
    for name, ip in (("vm-a", ip_a), ("vm-b", ip_b)):
        lease = until(lambda: _lease(api, name), BOOT_TIMEOUT, f"{name}'s DHCP lease")
        assert lease == f"{tiny.IP} eth0 {ip}/24 router=10.0.0.1 mtu={TENANT_MTU}", lease
    # Guest to guest across hypervisors, then out through vm-b's own host's SNAT.
    until(lambda: console_count(api, "vm-b", f"ANSWERS {ip_a}"), 90, "vm-b's ping of vm-a")
    until(lambda: console_count(api, "vm-b", f"ANSWERS {OUTSIDE}"), 60, "vm-b's ping of the outside")

    # The hypervisor with no port of the network has nothing of it and sees none of its packets,
    # while the two that host its ports carry them (the same capture on one of them).
    assert not [n for n in links(hv[host_c].netns) if names.vni_of(n) is not None]
    assert _vxlan_packets(hv[host_a].netns)
    assert _vxlan_packets(hv[host_c].netns) == []

    # A floating IP reaches vm-a from the outside, then vm-b once moved to it.
    fip = ok(api.post("/v1/floating-ips", json={}), 201)
    address = fip["address"]
    finished(api, ok(api.patch(f"/v1/floating-ips/{fip['id']}", json={"port": _port_of(api, "vm-a")["id"]}), 202))
    until(lambda: _ping(lab.outside, address), 10, f"{address} to answer from vm-a")
    network_id = _network_id(api, "blue")
    router_ns = {h: names.router_namespace(hv[h].namespace_prefix, network_id) for h in hv}
    assert address in _fixed_ips_on_external_leg(router_ns[host_a])
    finished(api, ok(api.patch(f"/v1/floating-ips/{fip['id']}", json={"port": _port_of(api, "vm-b")["id"]}), 202))
    until(lambda: _ping(lab.outside, address), 10, f"{address} to answer from vm-b")
    assert address in _fixed_ips_on_external_leg(router_ns[host_b])
    assert address not in _fixed_ips_on_external_leg(router_ns[host_a])

    # vm-b's backend dies (kill -9); the floating IP moves back to vm-a while it is down: a task
    # that succeeds for the host that is up.  Restarted, the backend converges (it drops the
    # address) without touching what did not change on it: same devices, same router namespace.
    before = links(hv[host_b].netns)
    router_inode = os.stat(f"/run/netns/{router_ns[host_b]}").st_ino
    cluster.kill(host_b)
    until(lambda: ok(api.get(f"/v1/hypervisors/{host_b}"))["tree_state"] == "down", 30, f"{host_b} seen down")
    finished(api, ok(api.patch(f"/v1/floating-ips/{fip['id']}", json={"port": _port_of(api, "vm-a")["id"]}), 202))
    assert address in _fixed_ips_on_external_leg(router_ns[host_a])
    cluster.start_backend(host_b)
    until(lambda: address not in _fixed_ips_on_external_leg(router_ns[host_b]), 60,
          f"{host_b} to drop {address} after its restart")
    # (its external leg goes with its last floating IP: that is the change)
    unchanged = {n: i for n, i in before.items() if n != names.external_leg(network_id)}
    assert {n: i for n, i in links(hv[host_b].netns).items() if n in unchanged} == unchanged
    assert os.stat(f"/run/netns/{router_ns[host_b]}").st_ino == router_inode
    until(lambda: _ping(lab.outside, address), 10, f"{address} to answer from vm-a again")
    assert console_count(api, "vm-b", tiny.IP) == 1  # the guest never lost its lease or link

    # Another tenant with the same CIDR on the same two hypervisors (the third disabled a while):
    # its t1 gets vm-a's address, and t2's ping of that address reaches t1 and never vm-a.
    ok(api.patch(f"/v1/hypervisors/{host_c}", json={"enabled": False}))
    acme = tenant_client(cluster, api, "acme")
    ok(acme.post("/v1/networks", json={"name": "blue"}), 201)
    ok(acme.post("/v1/subnets", json={"name": "blue-a", "network": "blue", "cidr": "10.0.0.0/24"}), 201)
    ok(acme.post("/v1/server-groups", json={"name": "spread", "policy": "anti-affinity"}), 201)
    launch["security_groups"] = ["default"]
    finished(acme, ok(acme.post("/v1/instances", json={"name": "t1", **launch}), 202))
    t1 = _port_of(acme, "t1")
    assert t1["ip_address"] == ip_a
    finished(acme, ok(acme.post("/v1/instances", json={"name": "t2", "user_data": _pings(ip_a, neighbour=True),
                                                        **launch}), 202))
    # (a tenant sees hypervisors under aliases of its own: where their taps are tells)
    taps = {tap_name(_port_of(acme, t)["id"]): t for t in ("t1", "t2")}
    placed = {h: [taps[n] for n in links(hv[h].netns) if n in taps] for h in hv}
    assert placed[host_c] == [] and sorted(placed[host_a] + placed[host_b]) == ["t1", "t2"], placed
    ok(api.patch(f"/v1/hypervisors/{host_c}", json={"enabled": True}))
    neighbour = until(lambda: next((line for line in console(acme, "t2").splitlines()
                                    if line.startswith(f"NEIGHBOUR {ip_a} ")), None), BOOT_TIMEOUT,
                      "t2's ping of t1")
    assert f"lladdr {t1['mac_address']}" in neighbour, neighbour

    # A second subnet of the network: vm-c on it, on the third hypervisor, reaches vm-a through
    # its own host's router.
    ok(api.post("/v1/subnets", json={"name": "blue-b", "network": "blue", "cidr": "10.0.1.0/24"}), 201)
    finished(api, ok(api.post("/v1/instances", json={
        "name": "vm-c", **launch, "nics": [{"subnet": "blue-b"}], "user_data": _pings(ip_a)}), 202))  # default group
    assert ok(api.get("/v1/instances/vm-c"))["hypervisor"] == host_c
    lease = until(lambda: _lease(api, "vm-c"), BOOT_TIMEOUT, "vm-c's DHCP lease")
    assert lease == f"{tiny.IP} eth0 {_port_of(api, 'vm-c')['ip_address']}/24 router=10.0.1.1 mtu={TENANT_MTU}"
    until(lambda: console_count(api, "vm-c", f"ANSWERS {ip_a}"), 90, "vm-c's ping of vm-a, across subnets")

    # Everything deleted through the API leaves nothing of either tenant on any hypervisor.
    for name in ("t1", "t2"):
        finished(acme, ok(acme.delete(f"/v1/instances/{name}"), 202))
    ok(acme.delete("/v1/subnets/blue-a"), 204)
    ok(acme.delete("/v1/networks/blue"), 204)
    finished(api, ok(api.delete(f"/v1/floating-ips/{fip['id']}"), 202))
    for name in ("vm-a", "vm-b", "vm-c"):
        finished(api, ok(api.delete(f"/v1/instances/{name}"), 202))
    finished(api, ok(api.delete("/v1/routers/blue-r"), 202))
    for name in ("blue-a", "blue-b"):
        ok(api.delete(f"/v1/subnets/{name}"), 204)
    ok(api.delete("/v1/networks/blue"), 204)
    for name, h in hv.items():
        pid = cluster.procs[name].pid
        try:
            until(lambda: not tenant_leftovers(h.netns, pid), 30, f"{name} to remove everything of the network")
        except AssertionError:
            raise AssertionError(f"{name} kept {tenant_leftovers(h.netns, pid)}") from None


def _network_id(api: httpx.Client, name: str) -> str:
    return str(ok(api.get(f"/v1/networks/{name}"))["id"])


def _tries(api: httpx.Client, instance: str) -> list[str]:
    """What each of the guest's connection attempts read (``TRY <reply or nothing>``), in order."""
    return [line[4:] for line in console(api, instance).splitlines() if line.startswith("TRY ")]


def _answered_after(api: httpx.Client, instance: str, seen: int, reply: str, answered: bool) -> bool:
    """Whether three attempts after the first ``seen`` all got ``reply`` (or, not ``answered``, none did)."""
    recent = _tries(api, instance)[seen:]
    return len(recent) >= 3 and all((t == reply) == answered for t in recent[-3:])


def test_security_groups_created_through_the_api_are_enforced_on_the_hypervisors(cluster: LocalCluster,
                                                                                 guest: tiny.Guest) -> None:
    lab = cluster.lab
    assert lab is not None
    api = offer_tiny(cluster, guest)
    ok(api.post("/v1/networks", json={"name": "public", "external": True}), 201)
    ok(api.post("/v1/subnets", json={"name": "public-v4", "network": "public", "cidr": "203.0.113.0/24",
                                      "gateway": OUTSIDE, "dhcp": False}), 201)
    ok(api.post("/v1/networks", json={"name": "blue"}), 201)
    ok(api.post("/v1/subnets", json={"name": "blue-a", "network": "blue", "cidr": "10.0.0.0/24"}), 201)
    finished(api, ok(api.post("/v1/routers", json={"name": "blue-r", "network": "blue", "snat": True}), 202))
    ok(api.post("/v1/server-groups", json={"name": "spread", "policy": "anti-affinity"}), 201)
    # web lets in TCP 22 from the external network only; quiet lets nothing in.
    ok(api.post("/v1/security-groups", json={"name": "web"}), 201)
    from_outside = ok(api.post("/v1/security-groups/web/rules", json={
        "direction": "ingress", "protocol": "tcp", "port_min": 22, "remote_cidr": "203.0.113.0/24"}), 201)
    ok(api.post("/v1/security-groups", json={"name": "quiet"}), 201)

    # vm-a serves TCP 22 (busybox nc); vm-b, in the default group, tries it every second.
    serve = """#!/bin/sh
printf '#!/bin/sh\\necho hello-from-a\\n' >/run/hello
chmod 755 /run/hello
nc -ll -p 22 -e /run/hello &
"""
    launch = {"flavor": "tiny", "image": "tiny", "server_group": "spread", "nics": [{"subnet": "blue-a"}]}
    finished(api, ok(api.post("/v1/instances", json={"name": "vm-a", "user_data": serve,
                                                      "security_groups": ["web"], **launch}), 202))
    ip_a = _port_of(api, "vm-a")["ip_address"]
    knock = f"""#!/bin/sh
while :; do
    r=$(nc -w 1 {ip_a} 22 </dev/null 2>/dev/null)
    echo "TRY ${{r:-nothing}}"
    sleep 1
done &
"""
    finished(api, ok(api.post("/v1/instances", json={"name": "vm-b", "user_data": knock, **launch}), 202))
    for name in ("vm-a", "vm-b"):
        until(lambda: _lease(api, name), BOOT_TIMEOUT, f"{name}'s DHCP lease")

    # From the outside, through a floating IP: the CIDR lets it in.  vm-b is not in it.
    fip = ok(api.post("/v1/floating-ips", json={}), 201)
    finished(api, ok(api.patch(f"/v1/floating-ips/{fip['id']}", json={"port": _port_of(api, "vm-a")["id"]}), 202))
    until(lambda: connect(lab.outside, fip["address"], 22) == b"hello-from-a\n", 60, "the outside's connection")
    until(lambda: _answered_after(api, "vm-b", 0, "hello-from-a", False), 60, "vm-b's refused tries")

    # web lets in the default group's members: vm-b gets through, within a few tries.
    seen = len(_tries(api, "vm-b"))
    ok(api.post("/v1/security-groups/web/rules", json={"direction": "ingress", "protocol": "tcp", "port_min": 22,
                                                       "remote_group": "default"}), 201)
    until(lambda: _answered_after(api, "vm-b", seen, "hello-from-a", True), 30, "vm-b let in by its group")

    # vm-b's port leaves the default group: the hosts of web's ports drop it from the set.
    seen = len(_tries(api, "vm-b"))
    ok(api.patch(f"/v1/ports/{_port_of(api, 'vm-b')['id']}", json={"security_groups": ["quiet"]}))
    until(lambda: _answered_after(api, "vm-b", seen, "hello-from-a", False), 30, "vm-b shut out again")

    # The CIDR rule removed: the outside is shut out too.
    ok(api.delete(f"/v1/security-groups/web/rules/{from_outside['id']}"), 204)
    until(lambda: connect(lab.outside, fip["address"], 22, timeout=0.5) is None, 30, "the outside shut out")
