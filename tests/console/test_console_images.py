"""Image uploads from the console, without a browser: the multipart form streamed into the API,
its CSRF token read before the file, the API's checks shown with their field, nothing left behind
by a refused or cut upload, and the form reader itself fed a byte at a time."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterator

import pytest
from fastapi import FastAPI

from frontend.console._multipart import FormError, StreamedForm
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api
from tests.console.browserless import tenant_with_reader, Console, csrf_of, reason_of
from tests.support.qcow2 import fake_qcow2

BOUNDARY = "----cloudland-test-boundary"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    path = tmp_path_factory.mktemp("console-images")
    yield from make_cloud(f"sqlite:///{path / 'state.db'}", path / "frontend", hosts=1)


@pytest.fixture(scope="module")
def acme(cloud: Cloud) -> Api:
    return tenant_with_reader(cloud, "acme")


@pytest.fixture
def console(app: FastAPI, acme: Api) -> Console:
    console = Console(app)
    console.login("acme-user", "password-of-acme")
    return console


def _multipart(*parts: tuple[str, bytes], close: bool = True) -> bytes:
    """A multipart/form-data body of ``parts`` (name, value) in that order; a part named file has a file name."""
    body = b""
    for name, value in parts:
        filename = '; filename="disk.qcow2"' if name == "file" else ""
        body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").encode()
        body += value + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def _post(console: Console, body: bytes) -> Any:
    return console.client.post("/ui/images", content=body,
                               headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})


def _images(api: Api) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in api.ok("get", "/v1/images")["items"]}


def _stored(cloud: Cloud) -> list[str]:
    return sorted(p.name for p in cloud.frontend.images_dir.iterdir())


def test_an_image_larger_than_the_body_limit_is_uploaded_in_one_form(console: Console, acme: Api,
                                                                     cloud: Cloud) -> None:
    token = csrf_of(console.get("/ui/images").text)
    disk = fake_qcow2(virtual_size=3 << 30, length=3 << 20)  # three times the API's 1 MiB body limit
    answer = console.client.post("/ui/images", data={"csrf": token, "name": "big", "format": "qcow2",
                                                     "min_memory_mb": "512"},
                                 files={"file": ("big.qcow2", disk, "application/octet-stream")})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/images"
    image = _images(acme)["big"]
    assert (image["status"], image["size_bytes"], image["min_disk_gb"], image["min_memory_mb"]) == \
        ("active", len(disk), 3, 512)
    page = console.get("/ui/images")
    assert "big" in page.text and "script-src 'self'" in page.headers["content-security-policy"]
    assert "script-src" not in console.get("/ui/volumes").headers["content-security-policy"]
    deleted = console.post(f"/ui/images/{image['id']}/delete")
    assert deleted.status_code == 303 and "big" not in _images(acme)
    assert image["id"] not in _stored(cloud)


@pytest.mark.parametrize("token", ["", "forged", "after-the-file"])
def test_without_the_sessions_token_before_the_file_nothing_is_made(console: Console, acme: Api, token: str) -> None:
    good = csrf_of(console.get("/ui/images").text)
    fields = [("name", b"sneaky"), ("format", b"qcow2")]
    if token == "after-the-file":
        body = _multipart(*fields, ("file", fake_qcow2()), ("csrf", good.encode()))
    else:
        body = _multipart(("csrf", token.encode()), *fields, ("file", fake_qcow2()))
    answer = _post(console, body)
    assert answer.status_code == 403 and "CSRF" in answer.text
    assert "sneaky" not in _images(acme)


def test_a_refused_file_shows_the_apis_field_and_leaves_no_image(console: Console, acme: Api,
                                                                 cloud: Cloud) -> None:
    token = csrf_of(console.get("/ui/images").text).encode()
    before = _stored(cloud)
    answer = _post(console, _multipart(("csrf", token), ("name", b"junk"), ("format", b"qcow2"),
                                       ("file", b"not a disk image at all")))
    assert answer.status_code == 422 and 'class="field">format<' in answer.text
    assert "not a qcow2 image" in reason_of(answer.text)
    answer = _post(console, _multipart(("csrf", token), ("name", b"bad name!"), ("format", b"qcow2"),
                                       ("file", fake_qcow2())))
    assert answer.status_code == 422 and 'class="field">name<' in answer.text
    assert "junk" not in _images(acme) and "bad name!" not in _images(acme)
    assert _stored(cloud) == before


def test_a_form_cut_off_inside_its_file_leaves_nothing(console: Console, acme: Api, cloud: Cloud) -> None:
    token = csrf_of(console.get("/ui/images").text).encode()
    before = _stored(cloud)
    cut = _multipart(("csrf", token), ("name", b"cut"), ("format", b"qcow2"), ("file", fake_qcow2()), close=False)
    answer = _post(console, cut[:-200])
    assert answer.status_code == 400 and 'class="field">file<' in answer.text
    assert reason_of(answer.text) == "the form ended before its file did"
    no_file = _post(console, _multipart(("csrf", token), ("name", b"nofile"), ("format", b"qcow2")))
    assert no_file.status_code == 400 and reason_of(no_file.text) == "no file was sent"
    assert "cut" not in _images(acme) and "nofile" not in _images(acme)
    assert _stored(cloud) == before


def test_a_reader_is_refused_an_upload(app: FastAPI, acme: Api) -> None:
    reader = Console(app)
    reader.login("acme-reader", "password-of-reader")
    page = reader.get("/ui/images")
    assert 'id="upload"' not in page.text
    answer = _post(reader, _multipart(("csrf", csrf_of(page.text).encode()), ("name", b"nope"),
                                      ("format", b"qcow2"), ("file", fake_qcow2())))
    assert answer.status_code == 403 and "needs the member role" in reason_of(answer.text)
    assert "nope" not in _images(acme)


async def _chunks_of(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


@pytest.mark.parametrize("size", [1, 7, 1 << 16])
def test_the_form_reader_gives_the_fields_then_the_file_whatever_the_chunks(size: int) -> None:
    disk = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"

    async def read() -> tuple[dict[str, str], bytes]:
        form = StreamedForm(f"multipart/form-data; boundary={BOUNDARY}",
                            _chunks_of(_multipart(("csrf", b"t"), ("name", "caf\u00e9".encode()), ("file", disk)),
                                       size), "file")
        await form.read_fields()
        fields = dict(form.fields)
        return fields, b"".join([chunk async for chunk in form.file()])

    fields, file = asyncio.run(read())
    assert fields == {"csrf": "t", "name": "caf\u00e9"} and file == disk


def test_the_form_reader_refuses_what_it_does_not_take() -> None:
    async def fields_of(content_type: str, body: bytes) -> dict[str, str]:
        form = StreamedForm(content_type, _chunks_of(body, 1 << 16), "file")
        await form.read_fields()
        return form.fields

    multipart = f"multipart/form-data; boundary={BOUNDARY}"
    with pytest.raises(FormError, match="multipart/form-data"):
        asyncio.run(fields_of("application/x-www-form-urlencoded", b"csrf=t"))
    with pytest.raises(FormError, match="longer than 4096") as long:
        asyncio.run(fields_of(multipart, _multipart(("name", b"x" * 5000), ("file", b""))))
    assert long.value.field == "name"
    with pytest.raises(FormError, match="not valid multipart/form-data"):
        asyncio.run(fields_of(multipart, b"x" * (2 << 20) + _multipart(("file", b""))))
    with pytest.raises(FormError, match="more than 16 fields"):
        asyncio.run(fields_of(multipart, _multipart(*[(f"f{i}", b"") for i in range(17)], ("file", b""))))
