"""A fresh local cloud serves its API over TLS only, with the certificate its frontend generated,
and clctl talks to it only when told to trust that certificate."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import structlog.testing
import yaml
from cryptography import x509

from frontend.tlscert import api_pair
from localcluster import LocalCluster
from service.config import FrontendConfig
from tests.support.cloudapi import admin_client, clctl, running, until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("tls") / "cluster", agents=0, backends=1)
    with running(c):
        yield c


def _served_certificate(cluster: LocalCluster) -> x509.Certificate:
    pem = ssl.get_server_certificate(("127.0.0.1", cluster.api_port))
    return x509.load_pem_x509_certificate(pem.encode())


def test_the_api_serves_the_generated_certificate_over_tls_only(cluster: LocalCluster) -> None:
    assert cluster.api_url.startswith("https://")
    served = _served_certificate(cluster)
    assert served == x509.load_pem_x509_certificate(Path(cluster.ca_file).read_bytes())
    key = Path(cluster.ca_file).with_name("api.key")
    assert key.stat().st_mode & 0o077 == 0

    with admin_client(cluster) as api:
        assert api.get("/v1/whoami").raise_for_status().json()["user_name"] == "admin"

    # Plain HTTP on the API's port gets no answer at all, so no request is ever served in clear.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{cluster.api_port}/v1/whoami", timeout=10)
    with socket.create_connection(("127.0.0.1", cluster.api_port), timeout=10) as s:
        s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"HTTP/" not in s.recv(4096)

    # A client that trusts only the system's CAs refuses the self-signed certificate.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{cluster.api_url}/v1/whoami", timeout=10)

    ready = [json.loads(line) for line in cluster.log_text("frontend").splitlines()
             if '"frontend_ready"' in line]
    assert ready and ready[-1]["api"] == cluster.api_url


def test_clctl_needs_the_ca_file_and_keeps_it(cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    password = cluster.admin_password() + "\n"
    login = ["login", "--endpoint", cluster.api_url, "--username", "admin", "--password-stdin"]

    refused = clctl(home, *login, stdin=password)
    assert refused.returncode == 3, refused
    assert f"cannot reach the API at {cluster.api_url}: its TLS certificate is not trusted" in refused.stderr
    assert "--ca-file" in refused.stderr and "Traceback" not in refused.stderr

    plain = clctl(home, "login", "--endpoint", cluster.api_url.replace("https://", "http://"), "-u", "admin",
                   "--password-stdin", stdin=password)
    assert plain.returncode == 3 and "use https://" in plain.stderr, plain

    accepted = clctl(home, *login, "--ca-file", cluster.ca_file, stdin=password)
    assert accepted.returncode == 0, accepted.stderr
    saved = yaml.safe_load((home / ".config" / "cloudland" / "clctl.yaml").read_text())
    assert saved["endpoint"] == cluster.api_url and saved["ca_file"] == cluster.ca_file

    # Later commands trust the saved CA file; one given for the command replaces it.
    whoami = clctl(home, "--json", "whoami")
    assert whoami.returncode == 0 and json.loads(whoami.stdout)["user_name"] == "admin", whoami.stderr
    with structlog.testing.capture_logs():
        other_ca = api_pair(FrontendConfig(data_dir=str(tmp_path / "other")), "test").cert  # signed nothing here
    refused = clctl(home, "--ca-file", str(other_ca), "whoami")
    assert refused.returncode == 3 and f"not trusted by {other_ca}" in refused.stderr, refused.stderr
    assert clctl(home, "whoami", CLOUDLAND_CA_FILE=cluster.ca_file).returncode == 0

    missing = clctl(home, "--ca-file", str(tmp_path / "missing.crt"), "whoami")
    assert missing.returncode == 2 and "missing.crt" in missing.stderr, missing.stderr


def test_a_restarted_frontend_serves_the_same_certificate(cluster: LocalCluster) -> None:
    before = _served_certificate(cluster)
    cluster.kill("frontend")
    cluster.start_frontend()
    assert _served_certificate(cluster) == before

    def answers() -> bool:
        with admin_client(cluster) as api:
            return api.get("/v1/whoami").status_code == 200

    until(answers, 30, "the API after a restart")
