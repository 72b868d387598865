"""Image downloads check the frontend's TLS certificate against compute.frontend_ca_file."""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
from pathlib import Path
from typing import Iterator

import pytest
import structlog.testing

from backend.compute.exceptions import ImageError
from backend.compute.imagecache import QCOW2_MAGIC, ImageCache
from frontend.tlscert import TlsPair, api_pair
from service.config import FrontendConfig
from tests.support.daemons import run_daemon


IMAGE = "0b7d6c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"
CONTENT = QCOW2_MAGIC + bytes(4092)
SHA256 = hashlib.sha256(CONTENT).hexdigest()


def _pair(data_dir: Path) -> TlsPair:
    with structlog.testing.capture_logs():
        return api_pair(FrontendConfig(data_dir=str(data_dir)), "test")


@pytest.fixture
def frontend_pair(tmp_path: Path) -> TlsPair:
    return _pair(tmp_path / "frontend")


@pytest.fixture
def https_url(frontend_pair: TlsPair) -> Iterator[str]:
    """An HTTPS server of the image, with the frontend's generated certificate."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(CONTENT)))
            self.end_headers()
            self.wfile.write(CONTENT)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(frontend_pair.cert, frontend_pair.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/image?signature=secret"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_the_frontends_ca_file_is_trusted(tmp_path: Path, frontend_pair: TlsPair, https_url: str) -> None:
    cache = ImageCache(tmp_path / "images", verify=ssl.create_default_context(cafile=frontend_pair.cert))
    try:
        assert cache.ensure(IMAGE, https_url, SHA256, "qcow2").read_bytes() == CONTENT
    finally:
        cache.close()


@pytest.mark.parametrize("trust", ["system", "another frontend"])
def test_an_untrusted_certificate_is_refused_and_says_what_to_set(tmp_path: Path, https_url: str, trust: str) -> None:
    verify = True if trust == "system" else ssl.create_default_context(cafile=_pair(tmp_path / "other").cert)
    cache = ImageCache(tmp_path / "images", verify=verify)
    try:
        with pytest.raises(ImageError) as info:
            cache.ensure(IMAGE, https_url, SHA256, "qcow2")
    finally:
        cache.close()
    message = str(info.value)
    assert message.startswith(f"image {IMAGE}: cannot download it from 127.0.0.1:")
    assert "certificate is not trusted" in message and "compute.frontend_ca_file" in message
    assert "secret" not in message
    assert list((tmp_path / "images").iterdir()) == []


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "garbage"])
def test_an_unusable_ca_file_stops_the_backend(tmp_path: Path, content: str | None) -> None:
    pytest.importorskip("libvirt", reason="the compute driver needs libvirt-python")
    ca_file = tmp_path / "frontend-ca.crt"
    if content is not None:
        ca_file.write_text(content)
    config = tmp_path / "backend.yaml"
    config.write_text(f"node_id: hv1\ndata_dir: {tmp_path / 'data'}\nops_modules: [backend.compute]\n"
                      f"compute:\n  frontend_ca_file: {ca_file}\n")
    proc = run_daemon("backend", config)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.splitlines()[-1].startswith(
        f"cloudland-backend: compute.frontend_ca_file: cannot use {ca_file}: "), proc.stderr
