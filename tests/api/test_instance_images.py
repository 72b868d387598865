"""Images made from instances through the API, on the small in-process cloud of ``cloud.py``.

The recording hosts send their stand-in of a flattened disk to the frontend as the real driver
does: a PUT to the signed upload link of the op's body, here through the test client.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from frontend.db.models import Image
from frontend.services import Frontend
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api, error_of
from tests.api.test_instances import _host_by_db, _launch, _setup
from tests.support.qcow2 import fake_qcow2


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    yield from make_cloud(db_url, tmp_path / "frontend", hosts=3)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _hosts_upload(cloud: Cloud) -> list[tuple[str, str]]:
    """Every host sends its file through the test client; the (host, image path) of each upload."""
    sent: list[tuple[str, str]] = []
    for name, compute in cloud.computes.items():
        def upload(url: str, data: bytes, host: str = name) -> tuple[int, str]:
            sent.append((host, urlsplit(url).path))
            response = cloud.client.put(_path(url), content=data)
            return response.status_code, response.text
        compute.upload = upload
    return sent


def _done(cloud: Cloud, api: Api, accepted: dict[str, Any], status: str = "succeeded") -> dict[str, Any]:
    task = cloud.wait_task(api, accepted["task"]["id"])
    assert task["status"] == status, task
    return task


def _stopped(cloud: Cloud, api: Api, name: str, **extra: Any) -> dict[str, Any]:
    launched = _launch(cloud, api, name, **extra)
    assert launched["task"]["status"] == "succeeded", launched["task"]
    _done(cloud, api, api.ok("post", f"/v1/instances/{name}/stop", 202))
    return dict(api.ok("get", f"/v1/instances/{name}"))


def test_an_image_of_a_stopped_instance_is_stored_like_an_upload_and_launches_on_another_host(cloud: Cloud) -> None:
    api, tiny = _setup(cloud)
    sent = _hosts_upload(cloud)
    api.ok("post", "/v1/server-groups", 201, json={"name": "apart", "policy": "anti-affinity"})
    launched = _launch(cloud, api, "web", server_group="apart")
    assert launched["task"]["status"] == "succeeded", launched["task"]

    refused = api.post("/v1/instances/web/image", json={"name": "web-img"})
    error = error_of(refused)
    assert refused.status_code == 409 and error["field"] == "status", error
    assert "instance 'web' is active; stop the instance first" in error["reason"], error
    assert api.get("/v1/images/web-img").status_code == 404 and not sent

    _done(cloud, api, api.ok("post", "/v1/instances/web/stop", 202))
    web = api.ok("get", "/v1/instances/web")
    accepted = api.ok("post", "/v1/instances/web/image", 202, json={"name": "web-img"})
    image = accepted["resource"]
    assert (image["status"], image["source_instance_id"], image["org_id"], image["public"]) == (
        "queued", web["id"], api.who["org_id"], False)
    assert (accepted["task"]["kind"], accepted["task"]["resource_id"]) == ("image.create", image["id"])
    assert api.ok("get", "/v1/instances/web")["status"] in ("imaging", "stopped")
    task = _done(cloud, api, accepted)
    assert [s["name"] for s in task["steps"]] == ["image", "stored"]
    assert "url" not in str(task["steps"])  # the upload link is a credential: the task never shows it

    host = _host_by_db(cloud, web["id"])
    assert sent == [(host, f"/v1/images/{image['id']}/file")]
    file = cloud.computes[host].image_file
    image = api.ok("get", "/v1/images/web-img")
    assert (image["status"], image["checksum"], image["size_bytes"]) == (
        "active", hashlib.sha256(file).hexdigest(), len(file))
    # Its minimum disk is read from the file's header, as for any upload.
    assert (image["virtual_size_bytes"], image["min_disk_gb"]) == (1 << 30, 1)
    assert (image["kernel_id"], image["initrd_id"]) == (tiny["kernel_id"], tiny["initrd_id"])
    assert (cloud.frontend.images_dir / image["id"]).read_bytes() == file
    web = api.ok("get", "/v1/instances/web")
    assert (web["status"], web["fault"]) == ("stopped", None)

    # Launchable anywhere: here on another host than the instance it was made of.
    copy = _launch(cloud, api, "copy", image="web-img", server_group="apart")
    assert copy["task"]["status"] == "succeeded", copy["task"]
    assert copy["instance"]["image_id"] == image["id"] and _host_by_db(cloud, copy["instance"]["id"]) != host

    # Its file comes from the instance's host only.
    again = api.put(f"/v1/images/{image['id']}/file", content=file)
    assert again.status_code == 409 and "its file comes from the instance's hypervisor" in error_of(again)["reason"]


def test_an_upload_link_and_a_download_link_are_not_each_other(admin: Api, frontend: Frontend) -> None:
    # A queued image made from an instance, as POST /v1/instances/{instance}/image leaves it, and a user's.
    with frontend.db.transaction() as session:
        made = Image(org_id=admin.who["org_id"], status="queued", name="made", format="qcow2",
                     source_instance_id=str(uuid.uuid4()))
        session.add(made)
        session.flush()
        image_id = made.id
    user_image = admin.ok("post", "/v1/images", 201, json={"name": "mine", "format": "qcow2"})
    links, anonymous, qcow2 = frontend.image_links, admin.client, fake_qcow2()

    assert anonymous.put(_path(links.url(image_id)), content=qcow2).status_code == 401
    assert anonymous.put(f"/v1/images/{image_id}/file", content=qcow2).status_code == 401
    # An upload link is for an image made from an instance only.
    assert anonymous.put(_path(links.upload_url(user_image["id"], 60)), content=qcow2).status_code == 401
    expired = anonymous.put(_path(links.upload_url(image_id, -1)), content=qcow2)
    assert expired.status_code == 401 and "expired" in error_of(expired)["reason"]
    stored = anonymous.put(_path(links.upload_url(image_id, 60)), content=qcow2)
    assert stored.status_code == 200 and stored.json()["status"] == "active", stored.text
    assert anonymous.get(_path(links.upload_url(image_id, 60))).status_code == 401
    assert anonymous.get(_path(links.url(image_id))).content == qcow2
    # Once stored, it takes no other file, whoever sends it.
    assert anonymous.put(_path(links.upload_url(image_id, 60)), content=qcow2).status_code == 409


@pytest.mark.parametrize("file, why", [(b"not a disk image at all", "not a qcow2 image"),
                                        (fake_qcow2(backing_offset=512), "has a backing file")])
def test_a_refused_file_leaves_no_image_and_the_instance_stopped(cloud: Cloud, file: bytes, why: str) -> None:
    api, _ = _setup(cloud)
    _hosts_upload(cloud)
    web = _stopped(cloud, api, "web")
    host = _host_by_db(cloud, web["id"])
    cloud.computes[host].image_file = file
    accepted = api.ok("post", "/v1/instances/web/image", 202, json={"name": "web-img"})
    task = _done(cloud, api, accepted, "failed")
    assert why in task["error"], task["error"]
    assert api.get("/v1/images/web-img").status_code == 404
    assert not [p for p in cloud.frontend.images_dir.iterdir()
                if p.name.startswith((accepted["resource"]["id"], f".{accepted['resource']['id']}"))]
    web = api.ok("get", "/v1/instances/web")
    assert web["status"] == "stopped" and why in web["fault"], web
    events = api.ok("get", "/v1/events", params={"kind": "task.failed"})["items"]
    assert [e["resource_id"] for e in events] == [accepted["resource"]["id"]]

    # The name is free again, and the instance can be imaged once its host sends a good file.
    cloud.computes[host].image_file = fake_qcow2(virtual_size=1 << 30)
    _done(cloud, api, api.ok("post", "/v1/instances/web/image", 202, json={"name": "web-img"}))
    assert api.ok("get", "/v1/images/web-img")["status"] == "active"
    assert api.ok("get", "/v1/instances/web")["fault"] is None
