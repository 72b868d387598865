"""Talking to a local cloud from process-level tests: through its API, and through clctl."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import httpx

from localcluster import LocalCluster
from tests.support.leftovers import no_new_processes
from tests.support.waiting import until

if TYPE_CHECKING:
    from localcluster.guest import Guest

__all__ = ["admin_client", "clctl", "clctl_login", "console", "console_count", "finished", "offer_tiny", "ok",
           "running", "tenant_client", "until", "upload"]


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


def admin_client(cluster: LocalCluster, timeout: float = 60.0, api_url: str | None = None) -> httpx.Client:
    """An HTTPS client of the cloud's API (of one frontend: the first unless ``api_url``) that trusts
    the frontend's certificate, logged in as its admin."""
    return _client(cluster, "admin", cluster.admin_password(), timeout, api_url)


def tenant_client(cluster: LocalCluster, admin: httpx.Client, org: str, timeout: float = 60.0) -> httpx.Client:
    """A client logged in as the tenant admin of a new organization ``org``."""
    org_id = ok(admin.post("/v1/orgs", json={"name": org}), 201)["id"]
    password = f"password-of-{org}"
    ok(admin.post("/v1/users", json={"name": f"{org}-user", "password": password, "role": "tenant-admin",
                                     "org": org_id}), 201)
    return _client(cluster, f"{org}-user", password, timeout)


def _client(cluster: LocalCluster, username: str, password: str, timeout: float,
            api_url: str | None = None) -> httpx.Client:
    verify = cluster.ssl_context()
    base = api_url or cluster.api_url
    token = ok(httpx.post(f"{base}/v1/tokens", verify=verify,
                          json={"username": username, "password": password}), 201)["token"]
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                        verify=verify)


def clctl(home: Path, *args: str, stdin: str | None = None, timeout: float = 60.0,
          **env: str) -> subprocess.CompletedProcess[str]:
    """clctl as a user whose home is ``home``: its saved login is there, and nothing from this shell leaks in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLAND_") and k != "XDG_CONFIG_HOME"}
    return subprocess.run([sys.executable, "-m", "clctl", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**clean, "HOME": str(home), **env})


def clctl_login(home: Path, cluster: LocalCluster) -> None:
    """Log clctl in at ``home`` as the cloud's admin (at every frontend's API), trusting its certificate."""
    home.mkdir(exist_ok=True)
    endpoints = [arg for url in cluster.api_urls.values() for arg in ("--endpoint", url)]
    login = clctl(home, "login", *endpoints, "--ca-file", cluster.ca_file, "--username", "admin",
                  "--password-stdin", stdin=cluster.admin_password() + "\n")
    assert login.returncode == 0, login.stderr


def finished(api: httpx.Client, accepted: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
    """The task of a 202 answer once it has succeeded (its whole record in the failure if it failed)."""
    task_id = accepted["task"]["id"]
    task = until(lambda: (lambda t: t if t["status"] in ("succeeded", "failed") else None)(
        ok(api.get(f"/v1/tasks/{task_id}"))), timeout, f"task {task_id}")
    assert task["status"] == "succeeded", json.dumps(task, indent=1)[-3000:]
    return dict(task)


def upload(api: httpx.Client, name: str, fmt: str, path: Path, **extra: Any) -> dict[str, Any]:
    image = ok(api.post("/v1/images", json={"name": name, "format": fmt, **extra}), 201)
    with path.open("rb") as f:
        ok(api.put(f"/v1/images/{image['id']}/file", content=f.read()))
    return dict(image)


def offer_tiny(cluster: LocalCluster, guest: Guest, public: bool = False) -> httpx.Client:
    """An admin client of a cloud whose hosts are all up, offering the tiny guest as image and flavor
    ``tiny`` (the image to every organization if ``public``)."""
    api = admin_client(cluster)
    hosts = len(cluster.backend_names)
    until(lambda: len([h for h in ok(api.get("/v1/hypervisors"))["items"] if h["facts"]]) == hosts, 60,
          f"all {hosts} hypervisors with capacity")
    kernel = upload(api, "tiny-kernel", "raw", guest.kernel, public=public)
    initrd = upload(api, "tiny-initrd", "raw", guest.initrd, public=public)
    upload(api, "tiny", "qcow2", guest.disk, kernel=kernel["id"], initrd=initrd["id"], public=public)
    ok(api.post("/v1/flavors", json={"name": "tiny", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}), 201)
    return api


def console(api: httpx.Client, instance: str) -> str:
    return str(ok(api.get(f"/v1/instances/{instance}/console"))["log"])


def console_count(api: httpx.Client, instance: str, line: str) -> int:
    """How many lines of the instance's console start with ``line``."""
    return sum(1 for text in console(api, instance).splitlines() if text.startswith(line))
