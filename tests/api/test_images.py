"""Images: registration, the file upload and download, publishing, and who may see, use and delete them."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import update

from frontend.api.routes import images as image_routes
from frontend.bootstrap import recover
from frontend.db.models import Flavor, Image, Instance
from frontend.images import GIB, ImageStore, Refused, TooLarge
from frontend.services import Frontend
from tests.api.conftest import Api, error_of
from tests.support.qcow2 import fake_qcow2

VIRTUAL_SIZE = 5 * GIB // 2
QCOW2 = fake_qcow2(VIRTUAL_SIZE, length=32) + os.urandom(3 * 1024 * 1024)


def _files(frontend: Frontend) -> list[str]:
    root = frontend.data_dir / "images"
    return sorted(os.listdir(root)) if root.exists() else []


def _register(api: Api, name: str, fmt: str = "qcow2", **fields: Any) -> Any:
    return api.ok("post", "/v1/images", 201, json={"name": name, "format": fmt, **fields})


def _upload(api: Api, image: str, data: bytes | Iterator[bytes]) -> Any:
    return api.put(f"/v1/images/{image}/file", content=data, headers={"Content-Type": "application/octet-stream"})


def _instance(frontend: Frontend, org_id: str, image_id: str) -> str:
    with frontend.db.transaction() as session:
        flavor = Flavor(org_id=org_id, name=f"f-{image_id[:8]}", vcpus=1, memory_mb=128, disk_gb=1, status="active")
        session.add(flavor)
        session.flush()
        instance = Instance(org_id=org_id, name="vm", flavor_id=flavor.id, image_id=image_id, vcpus=1,
                            memory_mb=128, disk_gb=1, status="active")
        session.add(instance)
        session.flush()
        return instance.id


def test_register_upload_download_round_trip(admin: Api, frontend: Frontend) -> None:
    member = admin.tenant("acme", role="member")
    checksum = hashlib.sha256(QCOW2).hexdigest()
    image = _register(member, "ubuntu", checksum=checksum, min_memory_mb=512)
    assert (image["status"], image["format"], image["checksum"], image["size_bytes"]) == ("queued", "qcow2",
                                                                                          checksum, None)
    assert (image["virtual_size_bytes"], image["min_disk_gb"], image["min_memory_mb"]) == (None, None, 512)
    assert image["public"] is False and image["org_id"] == member.who["org_id"]
    response = member.get("/v1/images/ubuntu/file")
    assert response.status_code == 409 and "queued" in error_of(response)["reason"]

    # In odd-sized pieces, so that the qcow2 magic is split across chunks.
    pieces = iter([QCOW2[:1], QCOW2[1:3], QCOW2[3:1000], QCOW2[1000:]])
    active = member.ok("put", "/v1/images/ubuntu/file", content=pieces)
    assert (active["status"], active["checksum"], active["size_bytes"]) == ("active", checksum, len(QCOW2))
    # The header's 2.5 GiB, not the file's 3 MiB; whole GiB as flavors have them, rounded up.
    assert (active["virtual_size_bytes"], active["min_disk_gb"]) == (VIRTUAL_SIZE, 3)
    assert _files(frontend) == [image["id"]]

    response = member.get(f"/v1/images/{image['id']}/file")
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(response.content).hexdigest() == checksum and response.content == QCOW2
    assert member.ok("get", "/v1/images/ubuntu") == member.ok("get", f"/v1/images/{image['id']}") == active
    assert [i["name"] for i in member.ok("get", "/v1/images")["items"]] == ["ubuntu"]

    response = _upload(member, "ubuntu", QCOW2)
    assert response.status_code == 409 and "active" in error_of(response)["reason"]

    member.ok("delete", "/v1/images/ubuntu", 204)
    assert member.get(f"/v1/images/{image['id']}").status_code == 404
    assert _files(frontend) == []


def test_upload_computes_the_checksum_when_none_was_declared(admin: Api) -> None:
    data = os.urandom(100_000)
    _register(admin, "disk", "raw")
    active = _upload(admin, "disk", data).json()
    assert active["checksum"] == hashlib.sha256(data).hexdigest() and active["size_bytes"] == len(data)
    assert (active["virtual_size_bytes"], active["min_disk_gb"]) == (len(data), 1)  # a raw disk is its file
    assert admin.get("/v1/images/disk/file").content == data


@pytest.mark.parametrize("fmt, declared, data, field, reason", [
    ("qcow2", hashlib.sha256(b"other").hexdigest(), QCOW2, "checksum", "not the declared"),
    ("raw", hashlib.sha256(b"other").hexdigest(), b"raw bytes", "checksum", "not the declared"),
    ("qcow2", None, b"\x00" * 5000, "format", "not a qcow2 image"),
    ("qcow2", None, b"QFI", "format", "not a qcow2 image"),
    ("qcow2", None, fake_qcow2()[:31], "format", "not a qcow2 image: it ends within the header"),
    ("qcow2", None, fake_qcow2(version=1), "format", "its header says version 1, not 2 or 3"),
    ("qcow2", None, fake_qcow2(backing_offset=512), "file", "has a backing file"),
    ("qcow2", None, fake_qcow2(virtual_size=0), "file", "virtual size is 0 bytes"),
    ("qcow2", None, fake_qcow2(virtual_size=(64 * 1024 + 1) * GIB), "file", "larger than any flavor's disk"),
    ("qcow2", None, fake_qcow2(virtual_size=(1 << 64) - 1), "file", "larger than any flavor's disk"),
    ("qcow2", None, b"", "file", "empty"),
    ("raw", None, b"", "file", "empty"),
], ids=["qcow2-other-checksum", "raw-other-checksum", "zeros", "magic-only", "header-cut", "version-1", "backing-file",
        "virtual-size-0", "virtual-size-over-flavors", "virtual-size-max", "qcow2-empty", "raw-empty"])
def test_a_refused_upload_keeps_nothing(admin: Api, frontend: Frontend, fmt: str, declared: str | None,
                                        data: bytes, field: str, reason: str) -> None:
    image = _register(admin, "img", fmt, checksum=declared)
    response = _upload(admin, "img", data)
    error = error_of(response)
    assert response.status_code == 422 and error["code"] == "invalid" and error["field"] == field, error
    assert reason in error["reason"]
    assert _files(frontend) == []
    assert admin.ok("get", f"/v1/images/{image['id']}")["status"] == "queued"
    assert admin.get("/v1/images/img/file").status_code == 409
    # The image stays queued and takes the right file afterwards.
    good = QCOW2 if fmt == "qcow2" else b"raw bytes"
    if declared is None or declared == hashlib.sha256(good).hexdigest():
        assert _upload(admin, "img", good).status_code == 200


def test_uploads_beyond_the_limit_are_refused(admin: Api, frontend: Frontend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_routes, "_store", lambda fe: ImageStore(fe.data_dir / "images", max_bytes=1000))
    _register(admin, "big", "raw")
    # Told by Content-Length, refused before reading; streamed without one, refused once past the limit.
    for body in (b"x" * 1001, iter([b"x" * 600, b"x" * 600])):
        response = _upload(admin, "big", body)
        assert response.status_code == 413 and error_of(response)["code"] == "too_large"
        assert _files(frontend) == []
    assert _upload(admin, "big", b"x" * 1000).json()["size_bytes"] == 1000


def test_registration_is_validated(admin: Api) -> None:
    member = admin.tenant("acme", role="member")
    for body, field in (({"name": "bad name", "format": "raw"}, "name"),
                        ({"name": "x", "format": "vmdk"}, "format"),
                        ({"name": "x"}, "format"),
                        ({"name": "x", "format": "raw", "checksum": "ab" * 31}, "checksum"),
                        ({"name": "x", "format": "raw", "checksum": "ag" * 32}, "checksum"),
                        ({"name": "x", "format": "raw", "min_memory_mb": 63}, "min_memory_mb"),
                        # the file says how large a disk it needs, not the uploader
                        ({"name": "x", "format": "raw", "min_disk_gb": 1}, "min_disk_gb"),
                        ({"name": "x", "format": "raw", "size_bytes": 1}, "size_bytes")):
        response = member.post("/v1/images", json=body)
        assert response.status_code == 422 and error_of(response)["field"] == field, (body, response.text)
    response = member.post("/v1/images", json={"name": "x", "format": "raw", "public": True})
    assert response.status_code == 403 and error_of(response)["field"] == "public"
    _register(member, "x", "raw")
    response = member.post("/v1/images", json={"name": "x", "format": "qcow2"})
    assert response.status_code == 409 and error_of(response)["field"] == "name"
    # Image names are unique within an organization only.
    _register(admin, "x", "raw")


def test_a_malformed_checksum_is_refused_with_what_it_must_be(admin: Api) -> None:
    for bad in ("ab" * 31, "xyz", "ab" * 32 + "0"):
        response = admin.post("/v1/images", json={"name": "x", "format": "raw", "checksum": bad})
        error = error_of(response)
        assert response.status_code == 422 and error["field"] == "checksum", response.text
        assert error["message"] == "checksum: 64 hexadecimal characters (sha256)", error
    # Either case is a sha256 in hex; it is kept as hashlib writes it.
    image = _register(admin, "x", "raw", checksum="AB" * 32)
    assert image["checksum"] == "ab" * 32


def test_the_minimum_disk_is_read_from_a_real_qcow2(admin: Api, tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1537M"], check=True)
    _register(admin, "real", "qcow2")
    active = _upload(admin, "real", disk.read_bytes()).json()
    assert active["status"] == "active", active
    assert (active["virtual_size_bytes"], active["min_disk_gb"]) == (1537 << 20, 2)
    assert active["size_bytes"] == disk.stat().st_size < 1 << 20  # an empty qcow2 is small; its disk is not
    big = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk), str(big)], check=True)
    _register(admin, "overlay", "qcow2")
    response = _upload(admin, "overlay", big.read_bytes())
    assert response.status_code == 422 and "backing file" in error_of(response)["reason"]


def test_a_restart_reads_the_virtual_size_of_images_uploaded_before_it_was_kept(admin: Api,
                                                                                frontend: Frontend) -> None:
    _register(admin, "q", "qcow2")
    _register(admin, "r", "raw")
    _upload(admin, "q", QCOW2)
    _upload(admin, "r", b"raw bytes")
    gone = _register(admin, "gone", "raw")
    _upload(admin, "gone", b"lost file")
    os.unlink(frontend.data_dir / "images" / gone["id"])
    with frontend.db.transaction() as session:
        session.execute(update(Image).values(virtual_size_bytes=None))
    recover(frontend.db, frontend.data_dir)
    sizes = {i["name"]: i["virtual_size_bytes"] for i in admin.ok("get", "/v1/images")["items"]}
    assert sizes == {"q": VIRTUAL_SIZE, "r": len(b"raw bytes"), "gone": None}


def test_kernel_and_initrd_must_be_raw_images(admin: Api) -> None:
    member = admin.tenant("acme", role="member")
    kernel = _register(member, "vmlinuz", "raw")
    _register(member, "initrd.img", "raw")
    _register(member, "disk", "qcow2")
    image = _register(member, "direct", kernel="vmlinuz", initrd="initrd.img")
    assert image["kernel_id"] == kernel["id"] and image["initrd_id"] is not None
    for body, field, code in (({"kernel": "disk"}, "kernel", 422),
                              ({"kernel": "vmlinuz", "initrd": "disk"}, "initrd", 422),
                              ({"initrd": "initrd.img"}, "initrd", 422),
                              ({"kernel": "no-such-image"}, "kernel", 404)):
        response = member.post("/v1/images", json={"name": "other", "format": "qcow2", **body})
        assert response.status_code == code and error_of(response)["field"] == field, (body, response.text)

    for name in ("vmlinuz", "initrd.img"):
        response = member.delete(f"/v1/images/{name}")
        assert response.status_code == 409 and "kernel or initrd" in error_of(response)["reason"]
    member.ok("delete", "/v1/images/direct", 204)
    member.ok("delete", "/v1/images/vmlinuz", 204)


def test_rename_and_publish(admin: Api) -> None:
    member = admin.tenant("acme", role="member")
    image = _register(member, "old", "raw")
    _register(member, "taken", "raw")
    assert member.ok("patch", "/v1/images/old", json={"name": "new"})["name"] == "new"
    response = member.patch("/v1/images/new", json={"name": "taken"})
    assert response.status_code == 409 and error_of(response)["field"] == "name"
    response = member.patch("/v1/images/new", json={"name": "bad/name"})
    assert response.status_code == 422 and error_of(response)["field"] == "name"
    response = member.patch("/v1/images/new", json={"format": "qcow2"})
    assert response.status_code == 422 and error_of(response)["reason"] == "unknown field"
    response = member.patch(f"/v1/images/{image['id']}", json={"public": True})
    assert response.status_code == 403 and error_of(response)["field"] == "public"

    _register(admin, "base", "raw")
    assert member.get("/v1/images/base").status_code == 404
    assert admin.ok("patch", "/v1/images/base", json={"public": True})["public"] is True
    assert member.ok("get", "/v1/images/base")["public"] is True
    assert admin.ok("patch", "/v1/images/base", json={"public": False})["public"] is False
    assert member.get("/v1/images/base").status_code == 404


def test_private_images_are_invisible_to_other_organizations(admin: Api, frontend: Frontend) -> None:
    a, b = admin.tenant("acme"), admin.tenant("initech")
    image = _register(a, "secret", "raw")
    _upload(a, "secret", b"private bytes")
    assert b.ok("get", "/v1/images")["items"] == []
    for ref in (image["id"], "secret"):
        for response in (b.get(f"/v1/images/{ref}"), b.get(f"/v1/images/{ref}/file"), b.delete(f"/v1/images/{ref}"),
                         b.patch(f"/v1/images/{ref}", json={"name": "mine"}), _upload(b, ref, b"overwrite")):
            assert response.status_code == 404 and error_of(response)["code"] == "not_found", response.text
    response = b.post("/v1/images", json={"name": "direct", "format": "qcow2", "kernel": image["id"]})
    assert response.status_code == 404 and error_of(response)["field"] == "kernel"
    assert a.get("/v1/images/secret/file").content == b"private bytes"
    assert _files(frontend) == [image["id"]]


def test_public_images_are_seen_and_used_but_not_changed_by_others(admin: Api, frontend: Frontend) -> None:
    tenant = admin.tenant("acme")
    base = _register(admin, "base", "raw", public=True)
    kernel = _register(admin, "vmlinuz", "raw", public=True)
    _upload(admin, "base", b"public bytes")
    assert [i["name"] for i in tenant.ok("get", "/v1/images")["items"]] == ["base", "vmlinuz"]
    assert tenant.ok("get", "/v1/images/base")["id"] == base["id"]
    assert tenant.get(f"/v1/images/{base['id']}/file").content == b"public bytes"
    for response in (tenant.delete("/v1/images/base"), tenant.patch("/v1/images/base", json={"name": "mine"}),
                     _upload(tenant, "vmlinuz", b"trojan")):
        assert response.status_code == 404, response.text

    # A tenant's own image of the same name wins over the public one.
    own = _register(tenant, "base", "raw")
    assert tenant.ok("get", "/v1/images/base")["id"] == own["id"]

    direct = _register(tenant, "direct", kernel="vmlinuz")
    assert direct["kernel_id"] == kernel["id"]
    response = admin.delete("/v1/images/vmlinuz")
    assert response.status_code == 409 and "kernel or initrd" in error_of(response)["reason"]

    instance_id = _instance(frontend, tenant.who["org_id"], base["id"])
    response = admin.delete("/v1/images/base")
    assert response.status_code == 409 and "1 instances use this image" in error_of(response)["reason"]
    with frontend.db.transaction() as session:
        session.delete(session.get(Instance, instance_id))
    admin.ok("delete", "/v1/images/base", 204)
    assert _files(frontend) == []


def test_an_image_in_use_cannot_be_deleted(admin: Api, frontend: Frontend) -> None:
    member = admin.tenant("acme", role="member")
    image = _register(member, "img", "raw")
    _upload(member, "img", b"bytes")
    instance_id = _instance(frontend, member.who["org_id"], image["id"])
    response = member.delete("/v1/images/img")
    assert response.status_code == 409 and error_of(response)["code"] == "conflict"
    assert _files(frontend) == [image["id"]]
    with frontend.db.transaction() as session:
        session.delete(session.get(Instance, instance_id))
    member.ok("delete", "/v1/images/img", 204)
    assert _files(frontend) == []


def test_an_upload_in_progress_excludes_another(admin: Api, frontend: Frontend) -> None:
    image = _register(admin, "img", "raw")
    with frontend.db.transaction() as session:
        session.get(Image, image["id"]).status = "saving"  # type: ignore[union-attr]
    response = _upload(admin, "img", b"bytes")
    assert response.status_code == 409 and "saving" in error_of(response)["reason"]
    # A stuck upload is cleared by deleting the image.
    admin.ok("delete", "/v1/images/img", 204)


def test_reader_may_look_and_download_but_not_change(admin: Api) -> None:
    boss = admin.tenant("acme")
    _register(boss, "img", "raw")
    _upload(boss, "img", b"bytes")
    boss.ok("post", "/v1/users", 201, json={"name": "rita", "password": "long-enough", "role": "reader"})
    reader = boss.login("rita", "long-enough")
    for response in (reader.post("/v1/images", json={"name": "x", "format": "raw"}),
                     reader.patch("/v1/images/img", json={"name": "y"}),
                     reader.delete("/v1/images/img"),
                     _upload(reader, "img", b"other")):
        assert response.status_code == 403 and error_of(response)["code"] == "forbidden", response.text
    assert [i["name"] for i in reader.ok("get", "/v1/images")["items"]] == ["img"]
    assert reader.get("/v1/images/img/file").content == b"bytes"


def test_store_refuses_at_the_first_wrong_byte(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    image_id = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    sent: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for chunk in (b"QF", b"X", b"never read"):
            sent.append(chunk)
            yield chunk

    with pytest.raises(Refused):
        store.receive(image_id, chunks(), None, "qcow2")
    assert sent == [b"QF", b"X"] and os.listdir(tmp_path) == []
    with pytest.raises(TooLarge):
        ImageStore(tmp_path, max_bytes=3).receive(image_id, iter([b"ab", b"cd"]), None, "raw")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError):
        store.path("../state.db")
