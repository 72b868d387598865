"""Instances through the API, on a small in-process cloud with a real tree (volumes: ``test_volumes.py``)."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from frontend import imagelinks
from frontend.db.models import Instance, Port, Task, TaskStep
from frontend.hostalias import alias
from frontend.notices import NoticeRouter
from frontend.powerstate import POWER_NOTICE, PowerNotices
from frontend.scheduler import Demand
from frontend.tasks import Resumer
from sci import Targets, TreeClosed
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api, error_of
from tests.support.qcow2 import fake_qcow2
from tests.support.waiting import until

QCOW2 = fake_qcow2()


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    yield from make_cloud(db_url, tmp_path / "frontend", hosts=3)


def _setup(cloud: Cloud, tenant: str = "acme", **quotas: Any) -> tuple[Api, dict[str, Any]]:
    """A tenant with a flavor, an active image and a network it can launch on."""
    admin = cloud.admin
    if admin.get("/v1/flavors/small").status_code == 404:
        admin.ok("post", "/v1/flavors", 201, json={"name": "small", "vcpus": 1, "memory_mb": 256, "disk_gb": 1})
    api = admin.tenant(tenant, **quotas)
    image = api.ok("post", "/v1/images", 201, json={"name": "tiny", "format": "qcow2"})
    api.ok("put", f"/v1/images/{image['id']}/file", content=QCOW2)
    api.ok("post", "/v1/networks", 201, json={"name": "net"})
    api.ok("post", "/v1/subnets", 201, json={"name": "sub", "network": "net", "cidr": "10.0.0.0/24"})
    return api, image


def _launch(cloud: Cloud, api: Api, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "flavor": "small", "image": "tiny", "nics": [{"network": "net"}], **extra}
    accepted = api.ok("post", "/v1/instances", 202, json=body)
    assert accepted["task"]["status"] == "pending" and accepted["resource"]["status"] == "building"
    task = cloud.wait_task(api, accepted["task"]["id"])
    return {"task": task, "instance": api.ok("get", f"/v1/instances/{accepted['resource']['id']}")}


def _host_by_db(cloud: Cloud, instance_id: str) -> str:
    with cloud.frontend.db.read() as session:
        instance = session.get(Instance, instance_id)
        assert instance is not None and instance.hypervisor_id
        hosts = cloud.admin.ok("get", "/v1/hypervisors")["items"]
        return next(h["name"] for h in hosts if h["id"] == instance.hypervisor_id)


def test_hosts_are_registered_with_capacity(cloud: Cloud) -> None:
    hosts = cloud.admin.ok("get", "/v1/hypervisors")["items"]
    assert [h["name"] for h in hosts] == ["hv0", "hv1", "hv2"]
    assert all(h["status"] == "up" and h["total"]["vcpus"] >= 1 and h["total"]["memory_mb"] > 0 for h in hosts)


def test_launch_power_resize_delete(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    launched = _launch(cloud, api, "web")
    instance = launched["instance"]
    assert launched["task"]["status"] == "succeeded", launched["task"]
    assert instance["status"] == "active" and instance["power_state"] == "running"
    assert instance["hypervisor"] is None  # tenants are not told where things run
    assert instance["ports"] and instance["ports"][0]["ip_address"].startswith("10.0.0.")
    host = _host_by_db(cloud, instance["id"])
    assert cloud.computes[host].instances == {instance["id"]: "running"}
    steps = launched["task"]["steps"]
    # its network goes to no host here: these hosts run no network driver (tests/api/test_network_push.py)
    assert [s["name"] for s in steps] == ["place.0", "launch.0", "wire.0.plan", "activate", "groups", "members.plan"]
    assert steps[1]["result"][alias(api.who["org_id"], host)]["status"] == "ok"
    assert not any(name in json.dumps(launched["task"]) for name in cloud.computes)  # tenants see aliases only

    def act(path: str, expect: str, **kw: Any) -> dict[str, Any]:
        accepted = api.ok("post", f"/v1/instances/web/{path}", 202, **kw)
        task = cloud.wait_task(api, accepted["task"]["id"])
        assert task["status"] == "succeeded", task
        current = api.ok("get", "/v1/instances/web")
        assert current["status"] == expect
        return current

    assert act("stop", "stopped")["power_state"] == "shutoff"
    response = api.post("/v1/instances/web/stop")
    assert response.status_code == 409 and "stopped" in error_of(response)["reason"]
    assert act("start", "active")["power_state"] == "running"
    act("reboot", "active")
    cloud.admin.ok("post", "/v1/flavors", 201, json={"name": "large", "vcpus": 2, "memory_mb": 512, "disk_gb": 2})
    resized = act("resize", "active", json={"flavor": "large"})
    assert (resized["vcpus"], resized["memory_mb"], resized["disk_gb"]) == (2, 512, 2)
    used = cloud.admin.ok("get", f"/v1/hypervisors/{host}")["used"]
    assert used == {"vcpus": 2, "memory_mb": 512, "disk_gb": 2}
    response = api.post("/v1/instances/web/resize", json={"flavor": "small"})
    assert response.status_code == 422 and error_of(response)["field"] == "flavor"

    deleted = api.ok("delete", "/v1/instances/web", 202)
    assert cloud.wait_task(api, deleted["task"]["id"])["status"] == "succeeded"
    assert api.get("/v1/instances/web").status_code == 404
    assert cloud.computes[host].instances == {}
    assert cloud.admin.ok("get", f"/v1/hypervisors/{host}")["used"] == {"vcpus": 0, "memory_mb": 0, "disk_gb": 0}
    assert api.ok("get", "/v1/ports")["items"] == []


def test_a_failed_launch_is_retried_on_another_host(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    cloud.computes["hv0"].fail["instance.create"] = "disk full on hv0"
    cloud.computes["hv1"].fail["instance.create"] = "qemu crashed on hv1"
    launched = _launch(cloud, api, "web")
    assert launched["task"]["status"] == "succeeded"
    assert _host_by_db(cloud, launched["instance"]["id"]) == "hv2"
    failures = [s for s in launched["task"]["steps"] if s["op"] == "instance.create" and
                any(r["status"] != "ok" for r in s["result"].values())]
    messages = {m["message"] for s in failures for m in s["result"].values()}
    assert messages == {"disk full on hv0", "qemu crashed on hv1"}
    used = {h["name"]: h["used"]["vcpus"] for h in cloud.admin.ok("get", "/v1/hypervisors")["items"]}
    assert used == {"hv0": 0, "hv1": 0, "hv2": 1}


def test_console_comes_from_the_instances_host(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    web = _launch(cloud, api, "web")["instance"]
    host = _host_by_db(cloud, web["id"])
    console = api.ok("get", "/v1/instances/web/console")
    assert console == {"log": f"console of {web['id']} on {host}\n", "vnc": None}
    admin = cloud.admin  # operators are told where the display is; tenants are not
    image = admin.ok("post", "/v1/images", 201, json={"name": "ops-image", "format": "qcow2"})
    admin.ok("put", f"/v1/images/{image['id']}/file", content=QCOW2)
    ops = _launch(cloud, admin, "ops-vm", image="ops-image", nics=[])["instance"]
    ops_host = _host_by_db(cloud, ops["id"])
    assert admin.ok("get", "/v1/instances/ops-vm/console", params={"bytes": 5}) == {
        "log": f"console of {ops['id']} on {ops_host}\n"[-5:], "vnc": f"{ops_host}:127.0.0.1:5900"}
    response = api.get("/v1/instances/web/console", params={"bytes": 0})
    assert response.status_code == 422 and error_of(response)["field"] == "bytes"


def test_a_launch_failing_everywhere_fails_with_every_reason(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    for name, compute in cloud.computes.items():
        compute.fail["instance.create"] = f"broken {name}"
    launched = _launch(cloud, api, "web")
    task, instance = launched["task"], launched["instance"]
    assert task["status"] == "failed"
    assert all(f"broken hv{i}" in task["error"] for i in range(3)), task["error"]
    assert instance["status"] == "error" and "broken" in instance["fault"]
    assert all(h["used"]["vcpus"] == 0 for h in cloud.admin.ok("get", "/v1/hypervisors")["items"])
    events = api.ok("get", "/v1/events", params={"kind": "task.failed"})["items"]
    assert events and events[0]["resource_id"] == instance["id"]

    # Each reader is told of the hosts as everywhere else: a tenant by its organization's aliases,
    # an operator by the names `hypervisor list` shows.
    admin = cloud.admin
    image = admin.ok("post", "/v1/images", 201, json={"name": "ops-image", "format": "qcow2"})
    admin.ok("put", f"/v1/images/{image['id']}/file", content=QCOW2)
    ops = _launch(cloud, admin, "ops-vm", image="ops-image", nics=[])
    for reader, launch, named in ((api, launched, lambda host: alias(api.who["org_id"], host)),
                                  (admin, ops, lambda host: host)):
        instance_id = launch["instance"]["id"]
        texts = {"task": launch["task"]["error"],
                 "listed task": reader.ok("get", "/v1/tasks", params={"resource": instance_id})["items"][0]["error"],
                 "fault": reader.ok("get", f"/v1/instances/{instance_id}")["fault"],
                 "event": next(e for e in reader.ok("get", "/v1/events", params={"kind": "task.failed"})["items"]
                               if e["resource_id"] == instance_id)["message"]}
        for where, text in texts.items():
            assert all(f"{named(h)}: broken {h}" in text for h in cloud.computes), (where, text)
            assert "{host" not in text and (reader is api) == ("host-" in text), (where, text)


def test_a_flavor_too_small_for_the_image_is_refused_and_leaves_nothing(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    big = api.ok("post", "/v1/images", 201, json={"name": "big", "format": "qcow2", "min_memory_mb": 512})
    big = api.ok("put", f"/v1/images/{big['id']}/file", content=fake_qcow2(virtual_size=(3 << 30) // 2))
    assert (big["min_disk_gb"], big["min_memory_mb"]) == (2, 512)
    admin = cloud.admin
    admin.ok("post", "/v1/flavors", 201, json={"name": "roomy", "vcpus": 1, "memory_mb": 256, "disk_gb": 2})
    admin.ok("post", "/v1/flavors", 201, json={"name": "fits", "vcpus": 1, "memory_mb": 512, "disk_gb": 2})
    for flavor, needs in (("small", "min_disk_gb 2"), ("roomy", "min_memory_mb 512")):
        response = api.post("/v1/instances", json={"name": "vm", "flavor": flavor, "image": "big",
                                                   "nics": [{"network": "net"}]})
        error = error_of(response)
        assert response.status_code == 422 and error["field"] == "flavor" and needs in error["reason"], error
        assert f"flavor {flavor!r}" in error["reason"] and "image 'big'" in error["reason"]
    with cloud.frontend.db.read() as session:
        assert session.execute(select(func.count()).select_from(Instance)).scalar() == 0
        assert session.execute(select(func.count()).select_from(Port)).scalar() == 0
    assert api.ok("get", "/v1/tasks")["items"] == []

    launched = _launch(cloud, api, "vm", flavor="fits", image="big")
    assert launched["task"]["status"] == "succeeded", launched["task"]
    assert launched["instance"]["disk_gb"] == 2  # the flavor's disk, which holds the image
    # A resize below the image's memory is refused like a launch.
    admin.ok("post", "/v1/flavors", 201, json={"name": "lean", "vcpus": 2, "memory_mb": 256, "disk_gb": 3})
    response = api.post("/v1/instances/vm/resize", json={"flavor": "lean"})
    assert response.status_code == 422 and "min_memory_mb 512" in error_of(response)["reason"]
    assert api.ok("get", "/v1/instances/vm")["status"] == "active"


def test_two_launches_racing_for_the_last_room(cloud: Cloud) -> None:
    hosts = cloud.admin.ok("get", "/v1/hypervisors")["items"]
    for host in hosts[1:]:
        cloud.admin.ok("patch", f"/v1/hypervisors/{host['name']}", json={"enabled": False})
    room = hosts[0]["free"]
    cloud.admin.ok("post", "/v1/flavors", 201, json={"name": "half", "vcpus": 1,
                                                     "memory_mb": room["memory_mb"] // 2 + 1, "disk_gb": 1})
    api, _ = _setup(cloud)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: _launch(cloud, api, n, flavor="half"), ["a", "b", "c", "d"]))
    statuses = sorted(r["task"]["status"] for r in results)
    assert statuses == ["failed", "failed", "failed", "succeeded"], statuses
    loser = next(r for r in results if r["task"]["status"] == "failed")
    assert "no hypervisor has room" in loser["task"]["error"]
    used = cloud.admin.ok("get", f"/v1/hypervisors/{hosts[0]['name']}")["used"]
    assert used["memory_mb"] == room["memory_mb"] // 2 + 1


def test_anti_affinity_spreads_and_then_refuses(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    api.ok("post", "/v1/server-groups", 201, json={"name": "ha", "policy": "anti-affinity"})
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda n: _launch(cloud, api, n, server_group="ha"), ["a", "b", "c"]))
    assert all(r["task"]["status"] == "succeeded" for r in results)
    assert len({_host_by_db(cloud, r["instance"]["id"]) for r in results}) == 3
    fourth = _launch(cloud, api, "d", server_group="ha")
    assert fourth["task"]["status"] == "failed" and "no hypervisor has room" in fourth["task"]["error"]


def test_a_host_that_is_down_is_not_chosen(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    cloud.leaves["hv0"].stop()
    cloud.leaves["hv1"].stop()
    cloud.frontend.tasks.wait_idle(1)
    end = time.monotonic() + 10
    while {n.node_id for n in cloud.root.nodes() if n.up} & {"hv0", "hv1"}:
        assert time.monotonic() < end
        time.sleep(0.05)
    cloud.hosts.run_once()
    states = {h["name"]: h["status"] for h in cloud.admin.ok("get", "/v1/hypervisors")["items"]}
    assert states == {"hv0": "down", "hv1": "down", "hv2": "up"}
    for name in ("a", "b"):
        assert _launch(cloud, api, name)["task"]["status"] == "succeeded"
    assert {_host_by_db(cloud, i["id"]) for i in api.ok("get", "/v1/instances")["items"]} == {"hv2"}
    kinds = [e["kind"] for e in cloud.admin.ok("get", "/v1/events", params={"kind": "host"})["items"]]
    assert kinds.count("host.down") == 2


def test_quota_refusal_leaves_nothing_behind(cloud: Cloud) -> None:
    api, _ = _setup(cloud, instances=1)
    assert _launch(cloud, api, "one")["task"]["status"] == "succeeded"
    ports_before = api.ok("get", "/v1/ports")["items"]
    response = api.post("/v1/instances", json={"name": "two", "flavor": "small", "image": "tiny",
                                               "nics": [{"network": "net"}]})
    error = error_of(response)
    assert response.status_code == 409 and error["code"] == "quota_exceeded" and error["field"] == "instances"
    assert [i["name"] for i in api.ok("get", "/v1/instances")["items"]] == ["one"]
    assert api.ok("get", "/v1/ports")["items"] == ports_before


def test_bad_references_are_refused_with_the_field(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    other, _ = _setup(cloud, "globex")
    for field, body in (("flavor", {"flavor": "huge"}), ("image", {"image": "nope"}),
                        ("keypair", {"keypair": "nope"}), ("server_group", {"server_group": "nope"}),
                        ("zone", {"zone": "nowhere"})):
        response = api.post("/v1/instances", json={"name": "x", "flavor": "small", "image": "tiny", **body})
        assert response.status_code == 404 and error_of(response)["field"] == field, response.text
    theirs = other.ok("get", "/v1/images/tiny")["id"]
    response = api.post("/v1/instances", json={"name": "x", "flavor": "small", "image": theirs})
    assert response.status_code == 404 and error_of(response)["field"] == "image"
    with cloud.frontend.db.read() as session:
        assert session.execute(select(func.count()).select_from(Instance)).scalar() == 0
        assert session.execute(select(func.count()).select_from(Port)).scalar() == 0


def test_tenants_cannot_touch_each_others_instances(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    other, _ = _setup(cloud, "globex")
    mine = _launch(cloud, api, "web")["instance"]
    assert other.ok("get", "/v1/instances")["items"] == []
    for method, path in (("get", ""), ("delete", ""), ("post", "/stop"), ("post", "/reboot")):
        response = getattr(other, method)(f"/v1/instances/{mine['id']}{path}")
        assert response.status_code == 404, (method, path, response.text)
    assert other.get(f"/v1/instances/{mine['id']}").json() == other.get("/v1/instances/no-such-id").json() | {
        "error": {**error_of(other.get("/v1/instances/no-such-id")), "message": f"no instance {mine['id']!r}",
                  "reason": f"no instance {mine['id']!r}"}}
    task_id = api.ok("get", "/v1/tasks")["items"][0]["id"]
    assert other.get(f"/v1/tasks/{task_id}").status_code == 404
    assert api.ok("get", "/v1/instances/web")["status"] == "active"


def test_reconciliation_records_drift(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    web = _launch(cloud, api, "web")["instance"]
    db = _launch(cloud, api, "db")["instance"]
    web_host, db_host = _host_by_db(cloud, web["id"]), _host_by_db(cloud, db["id"])
    del cloud.computes[web_host].instances[web["id"]]
    cloud.computes[db_host].instances[db["id"]] = "shutoff"
    cloud.computes["hv0"].instances["ghost-1234"] = "running"
    assert cloud.reconciler.run_once() == 2
    assert cloud.reconciler.run_once() == 0  # recorded once, not every round
    vanished = api.ok("get", "/v1/events", params={"kind": "drift"})["items"]
    assert [(e["kind"], e["resource_id"]) for e in vanished] == [("drift.vanished", web["id"])]
    # A tenant reads the host's alias, and finds the events of that host by it.
    seen_as = alias(api.who["org_id"], web_host)
    assert vanished[0]["host"] == seen_as
    assert api.ok("get", "/v1/events", params={"host": seen_as})["items"] == vanished
    assert api.ok("get", "/v1/events", params={"host": web_host})["items"] == []
    assert api.ok("get", "/v1/instances/web")["power_state"] == "missing"
    assert api.ok("get", "/v1/instances/db")["status"] == "stopped"
    unknown = cloud.admin.ok("get", "/v1/events", params={"kind": "drift.unknown"})["items"]
    assert [(e["host"], e["resource_id"]) for e in unknown] == [("hv0", "ghost-1234")]


def test_a_hosts_notice_moves_an_instance_with_its_guest(cloud: Cloud) -> None:
    """What the compute driver tells from libvirt's events: a crash, a shutdown from inside, a start by hand."""
    cloud.root.notice_handler = NoticeRouter({POWER_NOTICE: PowerNotices(cloud.frontend.db)})
    api, _ = _setup(cloud)
    web = _launch(cloud, api, "web")["instance"]
    host = _host_by_db(cloud, web["id"])
    other = next(h for h in cloud.leaves if h != host)

    def tell(on: str, power: str, cause: str, at: float | None = None, instance: str = web["id"]) -> None:
        cloud.leaves[on].notify(POWER_NOTICE, {"instance": instance, "power_state": power, "cause": cause,
                                               "at": time.time() if at is None else at})

    def seen(status: str) -> dict[str, Any]:
        until(lambda: api.ok("get", "/v1/instances/web")["status"] == status, 10, f"web {status}")
        return dict(api.ok("get", "/v1/instances/web"))

    tell(other, "crashed", "crashed: its kernel panicked")  # not its host: nobody's word on it
    tell(host, "crashed", "crashed: its kernel panicked", at=time.time() - 3600)  # older than its launch
    tell(host, "paused", "paused")
    assert seen("paused")["fault"] == "paused"
    tell(host, "crashed", "crashed: its kernel panicked")
    crashed = seen("crashed")
    assert (crashed["power_state"], crashed["fault"]) == ("crashed", "crashed: its kernel panicked")
    events = api.ok("get", "/v1/events", params={"kind": "instance"})["items"]
    assert [(e["kind"], e["message"]) for e in events] == [
        ("instance.crashed", "instance web crashed: its kernel panicked"), ("instance.paused", "instance web paused")]
    assert api.ok("post", "/v1/instances/web/reboot", 409)  # a crashed guest is started, not rebooted

    accepted = api.ok("post", "/v1/instances/web/start", 202)  # booted again
    assert cloud.wait_task(api, accepted["task"]["id"])["status"] == "succeeded"
    assert (seen("active")["fault"], seen("active")["power_state"]) == (None, "running")
    tell(host, "shutoff", "shut down from inside the guest")
    assert seen("stopped")["power_state"] == "shutoff"
    tell(host, "running", "started")
    seen("active")
    tell(host, "running", "started")  # no news: no event
    tell(host, "bogus", "?")
    cloud.leaves[host].notify(POWER_NOTICE, ["not", "a", "map"])
    cloud.leaves[host].notify("instance.unheard-of", {})
    tell(host, "crashed", "crashed", instance="ghost-1234")
    # A task's own op is its own news: the task settles the instance.
    with cloud.frontend.db.transaction() as session:
        session.get(Instance, web["id"]).status = "rebooting"
    tell(host, "shutoff", "shut down from inside the guest")
    tell(host, "crashed", "crashed")  # handled in order: once this one is in, so are the ones before
    time.sleep(0.5)
    with cloud.frontend.db.transaction() as session:
        row = session.get(Instance, web["id"])
        assert (row.status, row.power_state) == ("rebooting", "running")
        row.status = "active"
    kinds = [e["kind"] for e in api.ok("get", "/v1/events", params={"kind": "instance"})["items"]]
    assert kinds == ["instance.running", "instance.shutoff", "instance.crashed", "instance.paused"]

    # The reconcile catches a change whose notice was lost, the same way.
    cloud.computes[host].instances[web["id"]] = "crashed"
    cloud.reconciler.run_once()
    found = seen("crashed")
    assert found["fault"] == "was found crashed by the reconcile"


def _launch_journalled_before_a_crash(cloud: Cloud, api: Api, built_at: float | None = None) -> tuple[str, str, dict[str, Any]]:
    """What a frontend killed between journalling a launch to hv2 and sending it leaves: its task, the
    instance and the command's body (built ``built_at``, a Unix time, if given: its links expire with it)."""
    frontend = cloud.frontend
    cloud.computes["hv0"].fail["instance.create"] = "not this one"
    cloud.computes["hv1"].fail["instance.create"] = "nor this one"
    engine_start = frontend.tasks.start
    frontend.tasks.start = lambda task_id: None  # type: ignore[method-assign] # the "crash": nothing runs it
    accepted = api.ok("post", "/v1/instances", 202, json={"name": "web", "flavor": "small", "image": "tiny"})
    task_id, instance_id = accepted["task"]["id"], accepted["resource"]["id"]
    # Replay what the dead frontend had done: placed on hv2, journalled the launch.
    with frontend.db.transaction() as session:
        others = frozenset(h["id"] for h in cloud.admin.ok("get", "/v1/hypervisors")["items"] if h["name"] != "hv2")
        host = frontend.scheduler.place(session, Demand(1, 256, 1), exclude=others)
        assert host is not None and host.name == "hv2"
        session.get(Instance, instance_id).hypervisor_id = host.id  # type: ignore[union-attr]
        session.add(TaskStep(task_id=task_id, seq=1, name="place.0", status="done",
                             result={"value": {"id": host.id, "name": "hv2"}}))
        session.get(Task, task_id).status = "running"  # type: ignore[union-attr]
    with pytest.MonkeyPatch.context() as then:
        if built_at is not None:
            then.setattr(imagelinks.time, "time", lambda: built_at)
        body = frontend.tasks.workflows["instance.create"]._spec(instance_id)  # type: ignore[attr-defined]
    with frontend.db.transaction() as session:
        session.add(TaskStep(task_id=task_id, seq=2, name="launch.0", status="sent", op="instance.create",
                             cmd_id=f"{task_id}.2", hosts=["hv2"], timeout_s=30, body=body))
    frontend.tasks.start = engine_start  # type: ignore[method-assign]
    return task_id, instance_id, body


def test_a_resumed_task_resends_under_the_same_id_and_nothing_runs_twice(cloud: Cloud) -> None:
    """What a frontend killed between sending a command and recording its answer sees on restart."""
    api, _ = _setup(cloud)
    task_id, instance_id, body = _launch_journalled_before_a_crash(cloud, api)
    sent = cloud.root.submit("instance.create", body, Targets.to("hv2"), timeout=30, cmd_id=f"{task_id}.2")
    assert sent.wait(30)["hv2"].ok
    assert cloud.computes["hv2"].instances == {instance_id: "running"}
    cloud.computes["hv2"].instances.clear()  # were it to run again, it would show up here
    assert cloud.frontend.tasks.resume() == 1
    task = cloud.wait_task(api, task_id)
    assert task["status"] == "succeeded" and [s["name"] for s in task["steps"]] == ["place.0", "launch.0", "activate", "groups", "members.plan"]
    assert cloud.computes["hv2"].instances == {}  # answered from the host's journal: not run again
    assert api.ok("get", "/v1/instances/web")["status"] == "active"


def test_a_delete_resumed_after_forgetting_the_instance_finishes_its_network_pushes(cloud: Cloud) -> None:
    """A frontend killed after a delete forgot the instance, before its ports left their networks'
    hosts: resumed, the task finishes from its journal instead of failing on the missing instance."""
    api, _ = _setup(cloud)
    launched = _launch(cloud, api, "web")
    host = _host_by_db(cloud, launched["instance"]["id"])
    task_id = api.ok("delete", "/v1/instances/web", 202)["task"]["id"]
    done = cloud.wait_task(api, task_id)
    assert done["status"] == "succeeded", done
    names = [step["name"] for step in done["steps"]]
    with cloud.frontend.db.transaction() as session:  # as if it had stopped right after "forget"
        cut = names.index("forget") + 1
        for step in session.execute(select(TaskStep).where(TaskStep.task_id == task_id)).scalars():
            if step.seq > cut:
                session.delete(step)
        task = session.get(Task, task_id)
        assert task is not None
        task.status = "running"
    deletes = cloud.computes[host].instances.copy()
    assert cloud.frontend.tasks.resume() == 1
    resumed = cloud.wait_task(api, task_id)
    assert resumed["status"] == "succeeded", resumed
    assert [step["name"] for step in resumed["steps"]] == names
    assert cloud.computes[host].instances == deletes  # the host was not asked again


def _link(url: str) -> tuple[str, int, str]:
    """A signed link's image id, expiry and signature."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path.split("/")[3], int(query["expires"][0]), query["signature"][0]


@pytest.mark.parametrize("host_ran_it", [False, True], ids=["never-arrived", "ran-before-the-crash"])
def test_a_launch_resent_after_a_long_outage_gets_a_fresh_image_link(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch, host_ran_it: bool) -> None:
    """The links of a launch journalled two days ago have expired: the resent command carries new
    ones, under the same id, so a host that never got it can fetch the image, and one that ran it
    answers from its journal (which knows commands by id, not body) without running it again."""
    api, image = _setup(cloud)
    links = cloud.frontend.image_links
    task_id, instance_id, old_body = _launch_journalled_before_a_crash(cloud, api, built_at=time.time() - 2 * 86400)
    assert not links.valid(*_link(old_body["instance"]["image"]["url"]))
    if host_ran_it:
        sent = cloud.root.submit("instance.create", old_body, Targets.to("hv2"), timeout=30, cmd_id=f"{task_id}.2")
        assert sent.wait(30)["hv2"].ok
        cloud.computes["hv2"].instances.clear()  # were it to run again, it would show up here
    engine = cloud.frontend.tasks
    real_send = engine.send
    resent: list[tuple[str, dict[str, Any]]] = []

    def spy(cmd_id: str, op: str, body: dict[str, Any], *rest: Any) -> Any:
        resent.append((cmd_id, body))
        return real_send(cmd_id, op, body, *rest)

    monkeypatch.setattr(engine, "send", spy)
    assert engine.resume() == 1
    assert cloud.wait_task(api, task_id)["status"] == "succeeded"
    cmd_id, body = resent[0]
    assert cmd_id == f"{task_id}.2"
    assert _link(body["instance"]["image"]["url"])[0] == image["id"]
    assert links.valid(*_link(body["instance"]["image"]["url"]))
    # Only the links were rebuilt; the step records what was sent last.
    assert {**body["instance"], "image": None} == {**old_body["instance"], "image": None}
    with cloud.frontend.db.read() as session:
        step = session.execute(select(TaskStep).where(TaskStep.task_id == task_id, TaskStep.seq == 2)).scalar_one()
        assert step.body == body
    assert cloud.computes["hv2"].instances == ({} if host_ran_it else {instance_id: "running"})


def test_a_stopping_frontend_leaves_tasks_in_flight_for_the_next_start(cloud: Cloud) -> None:
    """A clean shutdown must not record the tree's "lost" for commands it cut off, nor retry them elsewhere."""
    api, _ = _setup(cloud)
    for compute in cloud.computes.values():
        compute.create_delay = 1.0
    accepted = api.ok("post", "/v1/instances", 202, json={"name": "web", "flavor": "small", "image": "tiny"})
    task_id = accepted["task"]["id"]

    def launch_sent() -> bool:
        return any(s["op"] == "instance.create" for s in api.ok("get", f"/v1/tasks/{task_id}")["steps"])

    end = time.monotonic() + 10
    while not launch_sent():
        assert time.monotonic() < end
        time.sleep(0.02)
    cloud.frontend.tasks.stop()
    cloud.root.stop()  # aborts the launch in flight
    assert cloud.frontend.tasks.wait_idle(10)
    task = api.ok("get", f"/v1/tasks/{task_id}")
    assert task["status"] == "running"
    assert [(s["name"], s["status"]) for s in task["steps"]] == [("place.0", "done"), ("launch.0", "sent")]


def test_a_task_cut_short_by_a_failure_is_picked_up_again(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database or tree failure mid-task leaves it running; the resumer runs it again from its journal."""
    api, _ = _setup(cloud)
    engine = cloud.frontend.tasks
    real_send = engine.send
    calls = iter([TreeClosed("the tree root is stopped")])

    def flaky_send(*args: Any) -> Any:
        failure = next(calls, None)
        if failure is not None:
            raise failure
        return real_send(*args)

    monkeypatch.setattr(engine, "send", flaky_send)
    accepted = api.ok("post", "/v1/instances", 202, json={"name": "web", "flavor": "small", "image": "tiny"})
    assert engine.wait_idle(10)
    assert api.ok("get", f"/v1/tasks/{accepted['task']['id']}")["status"] == "running"
    assert Resumer(engine).run_once() == 1
    assert cloud.wait_task(api, accepted["task"]["id"])["status"] == "succeeded"
    assert sum(len(c.instances) for c in cloud.computes.values()) == 1


def test_user_data_is_free_text_but_nothing_a_database_cannot_hold(admin: Api) -> None:
    # Found by the fuzzer: a NUL (on PostgreSQL) or an unpaired surrogate (\ud800 in the JSON; on
    # any database) in user data was a 500.
    for bad in ("\x00", "\ud800"):
        body = {"name": "vm", "flavor": "small", "image": "tiny", "user_data": f"#!/bin/sh\necho {bad}"}
        response = admin.post("/v1/instances", content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and error_of(response)["field"] == "user_data"
