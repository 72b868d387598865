"""A small cloud with one of each kind of resource, for tests that must reach real rows of every
kind: the API fuzzer (``test_fuzz_api.py``) and the injection tests (``test_injection.py``).

The admin owns the zone, the flavors, a public image and an external network with a subnet; a
member of organization ``acme`` owns the rest (a keypair, network ``net`` with a subnet, a port,
a router and a floating IP on it, network ``bare`` with nothing, a security group with a rule,
a server group, a queued image, and instance ``vm`` with volume ``vol`` attached and its snapshot
``snap``, all made through their tasks on the cloud's recording hosts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.api.cloud import Cloud
from tests.api.conftest import ADMIN_PASSWORD, Api
from tests.support.qcow2 import fake_qcow2

__all__ = ["PUBLIC_KEY", "QCOW2", "World", "seed"]

QCOW2 = fake_qcow2()
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8oVb0k7nXh1k7JfF6QY3J2m4bGvT3Q0C3bX2m1Bz0 me@host"
MEMBER_PASSWORD = "password-of-acme"


@dataclass
class World:
    """Who calls, and what exists: the ids and names of real rows by kind, and valid values of
    fields that random data almost never hits (a public key, a free CIDR, a password)."""

    admin: Api
    member: Api
    refs: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, row: dict[str, Any], *keys: str) -> dict[str, Any]:
        self.refs.setdefault(kind, []).extend(str(row[k]) for k in keys or ("id", "name"))
        return row


def _succeeded(cloud: Cloud, api: Api, accepted: dict[str, Any]) -> dict[str, Any]:
    task = cloud.wait_task(api, accepted["task"]["id"])
    assert task["status"] == "succeeded", task
    return accepted


def seed(cloud: Cloud) -> World:
    admin = cloud.admin
    member = admin.tenant("acme", role="member")
    world = World(admin, member)
    world.refs.update(password=[ADMIN_PASSWORD, MEMBER_PASSWORD], public_key=[PUBLIC_KEY],
                      cidr=["10.0.0.0/24", "10.1.0.0/24", "10.1.0.0/16"], ip=["10.0.0.50", "10.1.0.9"])
    world.add("org", admin.ok("get", f"/v1/orgs/{member.who['org_id']}"))
    world.add("org", admin.ok("get", f"/v1/orgs/{admin.who['org_id']}"))
    for user in admin.ok("get", "/v1/users")["items"] + member.ok("get", "/v1/users")["items"]:
        world.add("user", user)
    world.add("zone", admin.ok("post", "/v1/zones", 201, json={"name": "spare"}))
    for host in admin.ok("get", "/v1/hypervisors")["items"]:
        world.add("hypervisor", host)
    for name, vcpus in (("small", 1), ("large", 2)):
        world.add("flavor", admin.ok("post", "/v1/flavors", 201, json={
            "name": name, "vcpus": vcpus, "memory_mb": 128 * vcpus, "disk_gb": vcpus}))
    tiny = world.add("image", admin.ok("post", "/v1/images", 201, json={"name": "tiny", "format": "qcow2",
                                                                         "public": True}))
    admin.ok("put", f"/v1/images/{tiny['id']}/file", content=QCOW2)
    world.add("image", member.ok("post", "/v1/images", 201, json={"name": "queued", "format": "raw"}))
    ext = world.add("network", admin.ok("post", "/v1/networks", 201, json={"name": "ext", "external": True}))
    admin.ok("post", "/v1/subnets", 201, json={"name": "ext-sub", "network": ext["id"], "cidr": "203.0.113.0/24"})

    world.add("keypair", member.ok("post", "/v1/keypairs", 201, json={"name": "key", "public_key": PUBLIC_KEY}))
    world.add("network", member.ok("post", "/v1/networks", 201, json={"name": "net"}))
    world.add("network", member.ok("post", "/v1/networks", 201, json={"name": "bare"}))
    world.add("subnet", member.ok("post", "/v1/subnets", 201, json={"name": "sub", "network": "net",
                                                                     "cidr": "10.0.0.0/24"}))
    group = world.add("security_group", member.ok("post", "/v1/security-groups", 201, json={"name": "web"}))
    world.add("rule", member.ok("post", f"/v1/security-groups/{group['id']}/rules", 201, json={
        "direction": "ingress", "protocol": "tcp", "port_min": 22}), "id")
    world.refs["rule"].append(group["rules"][0]["id"])
    port = world.add("port", member.ok("post", "/v1/ports", 201, json={"name": "p1", "network": "net"}))
    world.add("router", member.ok("post", "/v1/routers", 202, json={"name": "r1", "network": "net"})["resource"])
    fip = world.add("fip", member.ok("post", "/v1/floating-ips", 201, json={}), "id", "address")
    member.ok("patch", f"/v1/floating-ips/{fip['id']}", 202, json={"port": port["id"]})
    world.add("server_group", member.ok("post", "/v1/server-groups", 201, json={"name": "apart",
                                                                                "policy": "anti-affinity"}))
    launched = _succeeded(cloud, member, member.ok("post", "/v1/instances", 202, json={
        "name": "vm", "flavor": "small", "image": "tiny", "keypair": "key", "nics": [{"network": "net"}]}))
    created = _succeeded(cloud, member, member.ok("post", "/v1/volumes", 202, json={
        "name": "vol", "size_gb": 1, "instance": "vm"}))
    snapshot = _succeeded(cloud, member, member.ok("post", "/v1/snapshots", 202, json={
        "name": "snap", "volume": "vol"}))
    world.add("instance", launched["resource"])
    world.add("volume", created["resource"])
    world.add("snapshot", snapshot["resource"])
    world.refs["task"] = [launched["task"]["id"], created["task"]["id"], snapshot["task"]["id"]]
    return world
