"""clctl's CA file: where it comes from, what login keeps, and which endpoint it is used for.

``clctl.client.http_client`` is swapped for one that records the CA file each connection was
given and answers from a ``MockTransport``; the real handshake is in test_api_tls_processes.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

import clctl.client
from clctl.config import DEFAULT_ENDPOINT
from clctl.main import cli

ENDPOINT = "https://cloud.test:8080"


def invoke(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env, prog_name="clctl")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "CLOUDLAND_ENDPOINT", "CLOUDLAND_TOKEN", "CLOUDLAND_CA_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.crt").write_text("a certificate\n")
    (tmp_path / "other.crt").write_text("another certificate\n")
    return home


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """(endpoint, ca_file) of every connection clctl opens."""
    seen: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/tokens":
            return httpx.Response(201, json={"token": "t0k", "role": "admin", "expires_at": None})
        return httpx.Response(200, json={"user_name": "admin"})

    def connect(endpoint: str, timeout: httpx.Timeout, ca_file: str | None) -> httpx.Client:
        seen.append((endpoint, ca_file))
        return httpx.Client(base_url=endpoint, transport=httpx.MockTransport(answer))

    monkeypatch.setattr(clctl.client, "http_client", connect)
    return seen


def saved(home: Path) -> dict[str, str]:
    data = yaml.safe_load((home / ".config" / "cloudland" / "clctl.yaml").read_text())
    assert isinstance(data, dict)
    return data


def login(*extra: str) -> Result:
    result = invoke("login", "-u", "admin", "--password-stdin", *extra, input="pw\n")
    assert result.exit_code == 0, result.output
    return result


def test_the_default_endpoint_is_https() -> None:
    assert DEFAULT_ENDPOINT == "https://127.0.0.1:8080"


def test_login_keeps_the_ca_file_as_an_absolute_path(connections: list[tuple[str, str | None]], home: Path,
                                                     tmp_path: Path) -> None:
    login("--endpoint", ENDPOINT, "--ca-file", "ca.crt")
    ca = str(tmp_path / "ca.crt")
    assert saved(home) == {"endpoint": ENDPOINT, "token": "t0k", "ca_file": ca}
    os.chdir(home)  # the saved path still names the file from elsewhere
    assert invoke("whoami").exit_code == 0
    assert connections == [(ENDPOINT, ca), (ENDPOINT, ca)]


def test_the_option_and_the_environment_replace_the_saved_ca_file(connections: list[tuple[str, str | None]],
                                                                  tmp_path: Path) -> None:
    login("--endpoint", ENDPOINT, "--ca-file", "ca.crt")
    assert invoke("--ca-file", "other.crt", "whoami").exit_code == 0
    assert invoke("whoami", env={"CLOUDLAND_CA_FILE": "other.crt"}).exit_code == 0
    other = str(tmp_path / "other.crt")
    assert connections[1:] == [(ENDPOINT, other), (ENDPOINT, other)]


def test_the_saved_ca_file_is_only_for_the_saved_endpoint(connections: list[tuple[str, str | None]],
                                                          home: Path, tmp_path: Path) -> None:
    login("--endpoint", ENDPOINT, "--ca-file", "ca.crt")
    assert invoke("--endpoint", "https://elsewhere.test", "--token", "t", "whoami").exit_code == 0
    # Logging in again to the same endpoint keeps it; to another one without --ca-file drops it.
    login()
    assert saved(home)["ca_file"] == str(tmp_path / "ca.crt")
    login("--endpoint", "https://public.example")
    assert "ca_file" not in saved(home)
    assert connections == [(ENDPOINT, str(tmp_path / "ca.crt")), ("https://elsewhere.test", None),
                           (ENDPOINT, str(tmp_path / "ca.crt")), ("https://public.example", None)]


def test_a_missing_ca_file_is_a_usage_error(connections: list[tuple[str, str | None]]) -> None:
    result = invoke("--ca-file", "missing.crt", "whoami")
    assert result.exit_code == 2 and "missing.crt" in result.stderr
    result = invoke("login", "--endpoint", ENDPOINT, "--ca-file", "missing.crt", "-u", "a", "--password-stdin",
                    input="pw\n")
    assert result.exit_code == 2 and "missing.crt" in result.stderr
    assert connections == []


def test_a_ca_file_that_holds_no_certificate_is_named(tmp_path: Path) -> None:
    result = invoke("--endpoint", ENDPOINT, "--token", "t", "--ca-file", "ca.crt", "whoami")
    assert result.exit_code == 2, result.output
    assert f"cannot use the CA file {tmp_path / 'ca.crt'}" in result.stderr and "Traceback" not in result.output
