"""Images are fetched once per host over HTTP, verified as they stream, and never kept when wrong."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from backend.compute.exceptions import ImageError
from backend.compute.imagecache import QCOW2_MAGIC, ImageCache

IMAGE = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
CONTENT = QCOW2_MAGIC + bytes(range(256)) * 4096  # 1 MiB and a bit: several chunks
SHA256 = hashlib.sha256(CONTENT).hexdigest()


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"/image": CONTENT}
        self.gets = 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.gets += 1
                body = server.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                time.sleep(0.2)  # so that concurrent callers really overlap
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ImageCache]:
    c = ImageCache(tmp_path / "images")
    yield c
    c.close()


def test_concurrent_ensures_download_once(server: Server, cache: ImageCache) -> None:
    url = f"{server.url}/image?expires=1&signature=secret"
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: cache.ensure(IMAGE, url, SHA256, "qcow2"), range(8)))
    assert set(paths) == {cache.path(IMAGE)}
    assert cache.path(IMAGE).read_bytes() == CONTENT
    assert server.gets == 1
    assert cache.ensure(IMAGE, url, SHA256, "qcow2") == cache.path(IMAGE)
    assert server.gets == 1  # cached: not fetched again
    assert sorted(p.name for p in cache.root.iterdir()) == [IMAGE]


def test_wrong_checksum_is_removed_and_refused(server: Server, cache: ImageCache) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ImageError, match=f"image {IMAGE}: .* has sha256 {SHA256}, not {wrong}; it was removed"):
        cache.ensure(IMAGE, f"{server.url}/image", wrong, "qcow2")
    assert list(cache.root.iterdir()) == []
    # The next launch tries again (and succeeds once the checksum is right).
    assert cache.ensure(IMAGE, f"{server.url}/image", SHA256, "qcow2").read_bytes() == CONTENT
    assert server.gets == 2


def test_http_errors_name_the_image_and_not_the_link(server: Server, cache: ImageCache) -> None:
    with pytest.raises(ImageError, match=f"image {IMAGE}: 127.0.0.1:[0-9]+ answered 404") as caught:
        cache.ensure(IMAGE, f"{server.url}/missing?signature=secret", SHA256, "qcow2")
    assert "secret" not in str(caught.value)
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ImageError, match=f"image {IMAGE}: cannot download it from 127.0.0.1:{port}"):
        cache.ensure(IMAGE, f"http://127.0.0.1:{port}/image", SHA256, "qcow2")
    assert list(cache.root.iterdir()) == []


def test_a_raw_file_declared_qcow2_is_refused(server: Server, cache: ImageCache) -> None:
    raw = b"\0" * 4096
    server.files["/raw"] = raw
    with pytest.raises(ImageError, match="declared qcow2, but the file is not a qcow2 image"):
        cache.ensure(IMAGE, f"{server.url}/raw", hashlib.sha256(raw).hexdigest(), "qcow2")
    assert cache.ensure(IMAGE, f"{server.url}/raw", hashlib.sha256(raw).hexdigest(), "raw").read_bytes() == raw


def test_partial_downloads_of_a_killed_backend_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / f".{IMAGE}.abc.part").write_bytes(b"half")
    (root / IMAGE).write_bytes(b"whole")
    ImageCache(root).close()
    assert [p.name for p in root.iterdir()] == [IMAGE]


def test_each_use_of_a_cached_image_is_its_last_use_and_a_download_is_told(server: Server, cache: ImageCache) -> None:
    downloaded: list[None] = []
    cache.on_download = lambda: downloaded.append(None)
    url = f"{server.url}/image"
    cache.ensure(IMAGE, url, SHA256, "qcow2")
    assert len(downloaded) == 1
    week_ago = time.time() - 7 * 86400
    os.utime(cache.path(IMAGE), (week_ago, week_ago))
    cache.ensure(IMAGE, url, SHA256, "qcow2")
    assert time.time() - cache.path(IMAGE).stat().st_mtime < 60  # eviction goes by it
    assert len(downloaded) == 1 and server.gets == 1
