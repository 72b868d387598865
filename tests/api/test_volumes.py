"""Volumes and their snapshots through the API, on the small in-process cloud of ``cloud.py``.

The recording hosts refuse to attach a volume they do not hold, and to copy a snapshot they do
not hold, so a volume that works here was made on the right host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from frontend.hostalias import alias
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api, error_of
from tests.api.test_instances import QCOW2, _host_by_db, _launch, _setup


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    yield from make_cloud(db_url, tmp_path / "frontend", hosts=3)


def _done(cloud: Cloud, api: Api, accepted: dict[str, Any], status: str = "succeeded") -> dict[str, Any]:
    task = cloud.wait_task(api, accepted["task"]["id"])
    assert task["status"] == status, task
    return task


def _apart(cloud: Cloud, api: Api, *names: str) -> dict[str, str]:
    """Instances on different hosts: name -> host."""
    api.ok("post", "/v1/server-groups", 201, json={"name": "apart", "policy": "anti-affinity"})
    hosts = {}
    for name in names:
        launched = _launch(cloud, api, name, server_group="apart")
        assert launched["task"]["status"] == "succeeded", launched["task"]
        hosts[name] = _host_by_db(cloud, launched["instance"]["id"])
    return hosts


def _disk_used(cloud: Cloud) -> dict[str, int]:
    return {h["name"]: h["used"]["disk_gb"] for h in cloud.admin.ok("get", "/v1/hypervisors")["items"]}


def test_a_volume_is_made_where_it_is_first_attached_and_stays_there(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    hosts = _apart(cloud, api, "web", "db")
    before = _disk_used(cloud)
    created = api.ok("post", "/v1/volumes", 202, json={"name": "data", "size_gb": 2})
    _done(cloud, api, created)
    volume = api.ok("get", "/v1/volumes/data")
    assert (volume["status"], volume["hypervisor"], volume["attachment"]) == ("available", None, None)
    assert not any(c.volumes for c in cloud.computes.values()) and _disk_used(cloud) == before

    attach = api.ok("post", "/v1/volumes/data/attach", 202, json={"instance": "db"})
    assert [s["name"] for s in _done(cloud, api, attach)["steps"]] == ["place", "create", "attach", "attached"]
    volume = api.ok("get", "/v1/volumes/data")
    org = api.who["org_id"]
    assert volume["status"] == "in-use" and volume["hypervisor"] == alias(org, hosts["db"])
    assert volume["attachment"] == {"instance_id": volume["instance_id"], "instance": "db", "device": "vdb"}
    assert cloud.computes[hosts["db"]].volumes == {volume["id"]: volume["instance_id"]}
    assert _disk_used(cloud)[hosts["db"]] == before[hosts["db"]] + 2

    _done(cloud, api, api.ok("post", "/v1/volumes/data/detach", 202))
    assert api.ok("get", "/v1/volumes/data")["hypervisor"] == alias(org, hosts["db"])
    # It holds data now: it does not follow another instance, and says where each is.
    response = api.post("/v1/volumes/data/attach", json={"instance": "web"})
    error = error_of(response)
    assert response.status_code == 409 and error["field"] == "instance", error
    assert (f"volume 'data' holds data on {alias(org, hosts['db'])} and instance 'web' is on "
            f"{alias(org, hosts['web'])}" in error["reason"]), error
    assert "not moved between hypervisors" in error["reason"]
    assert api.ok("get", "/v1/volumes/data")["status"] == "available"

    _done(cloud, api, api.ok("delete", "/v1/volumes/data", 202))
    assert cloud.computes[hosts["db"]].volumes == {} and _disk_used(cloud) == before


def test_admins_are_told_hosts_by_name(cloud: Cloud) -> None:
    admin = cloud.admin
    image = admin.ok("post", "/v1/images", 201, json={"name": "ops-image", "format": "qcow2"})
    admin.ok("put", f"/v1/images/{image['id']}/file", content=QCOW2)
    _setup(cloud)  # the flavor
    admin.ok("post", "/v1/server-groups", 201, json={"name": "apart", "policy": "anti-affinity"})
    hosts = {}
    for name in ("web", "db"):
        launched = _launch(cloud, admin, name, image="ops-image", nics=[], server_group="apart")
        hosts[name] = _host_by_db(cloud, launched["instance"]["id"])
    _done(cloud, admin, admin.ok("post", "/v1/volumes", 202, json={"name": "data", "size_gb": 1, "instance": "db"}))
    assert admin.ok("get", "/v1/volumes/data")["hypervisor"] == hosts["db"]
    _done(cloud, admin, admin.ok("post", "/v1/volumes/data/detach", 202))
    response = admin.post("/v1/volumes/data/attach", json={"instance": "web"})
    assert f"holds data on {hosts['db']} and instance 'web' is on {hosts['web']}" in error_of(response)["reason"]


def test_create_with_an_instance_attaches_it_there(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    hosts = _apart(cloud, api, "web", "db")
    created = api.ok("post", "/v1/volumes", 202, json={"name": "data", "size_gb": 1, "instance": "web"})
    _done(cloud, api, created)
    volume = api.ok("get", "/v1/volumes/data")
    assert volume["status"] == "in-use" and volume["attachment"]["instance"] == "web"
    assert cloud.computes[hosts["web"]].volumes == {volume["id"]: volume["attachment"]["instance_id"]}
    assert api.ok("get", "/v1/instances/web")["volumes"] == [volume["id"]]
    response = api.delete("/v1/volumes/data")
    assert response.status_code == 409 and "in-use" in error_of(response)["reason"]


def test_a_failed_first_attach_unmakes_the_volume_which_may_then_go_anywhere(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    hosts = _apart(cloud, api, "web", "db")
    before = _disk_used(cloud)
    cloud.computes[hosts["web"]].fail["volume.attach"] = "no free disk slot"
    created = api.ok("post", "/v1/volumes", 202, json={"name": "data", "size_gb": 3, "instance": "web"})
    task = _done(cloud, api, created, "failed")
    assert "no free disk slot" in task["error"] and [s["name"] for s in task["steps"]][-2:] == ["unmake", "unplace"]
    volume = api.ok("get", "/v1/volumes/data")
    assert (volume["status"], volume["hypervisor"], volume["attachment"]) == ("available", None, None)
    assert "no free disk slot" in volume["fault"]
    assert cloud.computes[hosts["web"]].volumes == {} and _disk_used(cloud) == before
    _done(cloud, api, api.ok("post", "/v1/volumes/data/attach", 202, json={"instance": "db"}))
    assert api.ok("get", "/v1/volumes/data")["fault"] is None


def test_a_volume_of_a_zone_attaches_only_in_that_zone(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    _launch(cloud, api, "web")
    cloud.admin.ok("post", "/v1/zones", 201, json={"name": "spare"})
    _done(cloud, api, api.ok("post", "/v1/volumes", 202, json={"name": "data", "size_gb": 1, "zone": "spare"}))
    response = api.post("/v1/volumes/data/attach", json={"instance": "web"})
    assert response.status_code == 409 and "zone 'spare'" in error_of(response)["reason"]
    response = api.post("/v1/volumes", json={"name": "x", "size_gb": 1, "zone": "spare", "instance": "web"})
    assert response.status_code == 409 and error_of(response)["field"] == "zone"
    response = api.post("/v1/volumes", json={"name": "x"})
    assert response.status_code == 422 and error_of(response)["field"] == "size_gb"


def test_snapshots_and_volumes_made_from_them(cloud: Cloud) -> None:
    api, _ = _setup(cloud, snapshots=2, snapshot_gb=4)
    hosts = _apart(cloud, api, "web", "db")
    org = api.who["org_id"]
    _done(cloud, api, api.ok("post", "/v1/volumes", 202, json={"name": "empty", "size_gb": 1}))
    response = api.post("/v1/snapshots", json={"name": "nothing", "volume": "empty"})
    assert response.status_code == 409 and "never been attached" in error_of(response)["reason"]

    _done(cloud, api, api.ok("post", "/v1/volumes", 202, json={"name": "data", "size_gb": 2, "instance": "web"}))
    cloud.computes[hosts["web"]].consistency = "crash-consistent"
    before = _disk_used(cloud)
    taken = api.ok("post", "/v1/snapshots", 202, json={"name": "monday", "volume": "data"})
    assert taken["resource"]["status"] == "creating"
    _done(cloud, api, taken)
    snapshot = api.ok("get", "/v1/snapshots/monday")
    assert (snapshot["status"], snapshot["size_gb"], snapshot["consistency"]) == ("available", 2, "crash-consistent")
    assert snapshot["hypervisor"] == alias(org, hosts["web"]) and snapshot["fault"] is None
    assert cloud.computes[hosts["web"]].snapshots == {snapshot["id"]: snapshot["volume_id"]}
    assert _disk_used(cloud)[hosts["web"]] == before[hosts["web"]] + 2
    usage = api.ok("get", f"/v1/orgs/{org}")["usage"]
    assert (usage["snapshots"], usage["snapshot_gb"]) == (1, 2)
    _done(cloud, api, api.ok("post", "/v1/snapshots", 202, json={"name": "tuesday", "volume": "data"}))
    response = api.post("/v1/snapshots", json={"name": "wednesday", "volume": "data"})
    error = error_of(response)
    assert response.status_code == 409 and error["code"] == "quota_exceeded" and error["field"] == "snapshots"
    assert [s["name"] for s in api.ok("get", "/v1/snapshots", params={"volume": "data"})["items"]] == ["monday",
                                                                                                       "tuesday"]

    # A new volume from it: a copy on the snapshot's host, at least its size.
    response = api.post("/v1/volumes", json={"name": "small", "snapshot": "monday", "size_gb": 1})
    assert response.status_code == 422 and error_of(response)["field"] == "size_gb"
    response = api.post("/v1/volumes", json={"name": "there", "snapshot": "monday", "instance": "db"})
    assert response.status_code == 409 and error_of(response)["field"] == "instance"
    copy = api.ok("post", "/v1/volumes", 202, json={"name": "copy", "snapshot": "monday"})
    assert copy["resource"]["hypervisor"] == alias(org, hosts["web"])
    _done(cloud, api, copy)
    made = api.ok("get", "/v1/volumes/copy")
    assert (made["status"], made["size_gb"]) == ("available", 2)
    assert made["id"] in cloud.computes[hosts["web"]].volumes
    response = api.post("/v1/volumes/copy/attach", json={"instance": "db"})
    assert response.status_code == 409 and error_of(response)["field"] == "instance"
    _done(cloud, api, api.ok("post", "/v1/volumes/copy/attach", 202, json={"instance": "web"}))

    # Snapshots outlive their volume; deleting them gives their room back.
    _done(cloud, api, api.ok("post", "/v1/volumes/data/detach", 202))
    _done(cloud, api, api.ok("delete", "/v1/volumes/data", 202))
    assert api.ok("get", "/v1/snapshots/monday")["volume_id"] is None
    for name in ("monday", "tuesday"):
        _done(cloud, api, api.ok("delete", f"/v1/snapshots/{name}", 202))
    assert api.ok("get", "/v1/snapshots")["items"] == [] and cloud.computes[hosts["web"]].snapshots == {}
    assert _disk_used(cloud)[hosts["web"]] == before[hosts["web"]]  # data's 2 GB gone, copy's 2 GB came


def test_a_failed_snapshot_is_cleaned_up_and_deleted(cloud: Cloud) -> None:
    api, _ = _setup(cloud)
    hosts = _apart(cloud, api, "web")
    _done(cloud, api, api.ok("post", "/v1/volumes", 202, json={"name": "data", "size_gb": 1, "instance": "web"}))
    before = _disk_used(cloud)
    cloud.computes[hosts["web"]].fail["volume.snapshot"] = "copy failed: no space left on device"
    task = _done(cloud, api, api.ok("post", "/v1/snapshots", 202, json={"name": "s", "volume": "data"}), "failed")
    assert [s["name"] for s in task["steps"]] == ["snapshot", "cleanup"]
    snapshot = api.ok("get", "/v1/snapshots/s")
    assert snapshot["status"] == "error" and "no space left" in snapshot["fault"]
    response = api.post("/v1/volumes", json={"name": "copy", "snapshot": "s"})
    assert response.status_code == 409 and error_of(response)["field"] == "snapshot"
    _done(cloud, api, api.ok("delete", "/v1/snapshots/s", 202))
    assert _disk_used(cloud) == before
