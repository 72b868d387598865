"""Talking to a local cloud's API from process-level tests."""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx

from localcluster import LocalCluster


def admin_client(cluster: LocalCluster, timeout: float = 60.0) -> httpx.Client:
    """An HTTP client of the cloud's API, logged in as its admin."""
    token = httpx.post(f"{cluster.api_url}/v1/tokens",
                       json={"username": "admin", "password": cluster.admin_password()}).json()["token"]
    return httpx.Client(base_url=cluster.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """``check()``'s first truthy value; a failed connection (the API restarting) counts as not yet."""
    end = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.TransportError:
            value = None
        if value:
            return value
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(every)
