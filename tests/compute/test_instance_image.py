"""What the driver's instance.image is made of: qemu-img flattening an overlay into one self-contained
qcow2, and the image cache's client streaming the file to a signed upload link."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from backend.compute import qemuimg
from backend.compute.exceptions import HypervisorError, ImageError
from backend.compute.imagecache import ImageCache

IMAGE = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
MARKER = b"WRITTEN-BY-THE-GUEST"


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_an_overlay_is_flattened_into_a_qcow2_without_a_backing_file(tmp_path: Path) -> None:
    base, overlay, flat, raw = (tmp_path / n for n in ("base.raw", "inst.qcow2", "image.qcow2", "back.raw"))
    base.write_bytes(b"FROM-THE-IMAGE" + bytes((1 << 20) - 14))
    _qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay), "2M")
    qemuimg.flatten(overlay, flat, 60)
    header = flat.read_bytes()[:32]
    assert header[:4] == b"QFI\xfb" and header[8:16] == bytes(8)  # no backing file offset
    assert int.from_bytes(header[24:32], "big") == 2 << 20  # the overlay's size, not the image's
    base.unlink()  # self-contained: readable without what it was made over
    _qemu_img("convert", "-f", "qcow2", "-O", "raw", str(flat), str(raw))
    assert raw.read_bytes()[:14] == b"FROM-THE-IMAGE"


def test_a_failed_flatten_leaves_nothing_and_says_why(tmp_path: Path) -> None:
    bogus, flat = tmp_path / "bogus.qcow2", tmp_path / "image.qcow2"
    bogus.write_bytes(b"not a qcow2 file")
    with pytest.raises(HypervisorError, match="qemu-img convert exited"):
        qemuimg.flatten(bogus, flat, 60)
    assert not flat.exists()


class Receiver:
    """A frontend stand-in taking PUTs: 200 with the image, or the frontend's error shape."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.refuse: str | None = None
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.bodies.append((self.path, body))
                status, answer = (200, {"id": IMAGE, "status": "active"}) if receiver.refuse is None else (
                    422, {"error": {"code": "invalid", "message": receiver.refuse}})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()
    r.httpd.server_close()


def test_the_file_streams_to_the_upload_link(tmp_path: Path, receiver: Receiver) -> None:
    content = MARKER * 100_000  # a few chunks
    path = tmp_path / "image.qcow2"
    path.write_bytes(content)
    cache = ImageCache(tmp_path / "cache")
    try:
        link = f"{receiver.url}/v1/images/{IMAGE}/file?expires=1&signature=ab"
        sent = cache.upload(IMAGE, path, link)
        assert (sent.checksum, sent.size_bytes) == (hashlib.sha256(content).hexdigest(), len(content))
        assert receiver.bodies == [(f"/v1/images/{IMAGE}/file?expires=1&signature=ab", content)]

        receiver.refuse = "file: the qcow2 image has a backing file"
        with pytest.raises(ImageError) as refused:
            cache.upload(IMAGE, path, link)
        assert "refused the upload: 422 file: the qcow2 image has a backing file" in str(refused.value)
        assert "signature" not in str(refused.value)  # the link is a credential
    finally:
        cache.close()
