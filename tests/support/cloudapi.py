"""Talking to a local cloud from process-level tests: through its API, and through clctl."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx

from localcluster import LocalCluster
from tests.support.leftovers import no_new_processes
from tests.support.waiting import until

__all__ = ["admin_client", "clctl", "clctl_login", "ok", "running", "until"]


@contextlib.contextmanager
def running(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """``cluster`` started, and stopped however the test ends; no process of it outlives the block."""
    with no_new_processes():
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of ``response``, which must have ``status`` (else the call and the body in the failure)."""
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


def admin_client(cluster: LocalCluster, timeout: float = 60.0) -> httpx.Client:
    """An HTTPS client of the cloud's API that trusts the frontend's certificate, logged in as its admin."""
    verify = cluster.ssl_context()
    token = httpx.post(f"{cluster.api_url}/v1/tokens", verify=verify,
                       json={"username": "admin", "password": cluster.admin_password()}).json()["token"]
    return httpx.Client(base_url=cluster.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                        verify=verify)


def clctl(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """clctl as a user whose home is ``home``: its saved login is there, and nothing from this shell leaks in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLAND_") and k != "XDG_CONFIG_HOME"}
    return subprocess.run([sys.executable, "-m", "clctl", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env={**clean, "HOME": str(home), **env})


def clctl_login(home: Path, cluster: LocalCluster) -> None:
    """Log clctl in at ``home`` as the cloud's admin, trusting its certificate."""
    home.mkdir(exist_ok=True)
    login = clctl(home, "login", "--endpoint", cluster.api_url, "--ca-file", cluster.ca_file, "--username", "admin",
                  "--password-stdin", stdin=cluster.admin_password() + "\n")
    assert login.returncode == 0, login.stderr
