"""Talking to a local cloud's API from process-level tests."""

from __future__ import annotations

import httpx

from localcluster import LocalCluster
from tests.support.waiting import until

__all__ = ["admin_client", "until"]


def admin_client(cluster: LocalCluster, timeout: float = 60.0) -> httpx.Client:
    """An HTTPS client of the cloud's API that trusts the frontend's certificate, logged in as its admin."""
    verify = cluster.ssl_context()
    token = httpx.post(f"{cluster.api_url}/v1/tokens", verify=verify,
                       json={"username": "admin", "password": cluster.admin_password()}).json()["token"]
    return httpx.Client(base_url=cluster.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                        verify=verify)
