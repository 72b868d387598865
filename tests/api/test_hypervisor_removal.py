"""A hypervisor gone for good: revoked, what was on it deleted without asking it, then removed.

On the small in-process cloud of ``cloud.py``; the host's key is marked revoked in the state as
``POST /v1/hypervisors/{name}/revoke`` marks it (that route, with its CURVE tree, is tested in
``test_enrolment.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from frontend.db.models import NodeKey, utcnow
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import error_of
from tests.api.test_instances import _host_by_db, _launch, _setup
from tests.api.test_volumes import _done


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    yield from make_cloud(db_url, tmp_path / "frontend", hosts=2)


def _revoke(cloud: Cloud, host: str) -> None:
    with cloud.frontend.db.transaction() as session:
        session.add(NodeKey(node_id=host, role="backend", public_key=f"key-of-{host}".ljust(40, "x"),
                            revoked_at=utcnow()))


def test_what_a_revoked_host_held_is_deleted_without_it_then_the_host_is_removed(cloud: Cloud) -> None:
    api, _ = _setup(cloud, snapshots=1, snapshot_gb=4)
    launched = _launch(cloud, api, "web")
    assert launched["task"]["status"] == "succeeded", launched["task"]
    host = _host_by_db(cloud, launched["instance"]["id"])
    _done(cloud, api, api.ok("post", "/v1/volumes", 202, json={"name": "data", "size_gb": 1, "instance": "web"}))
    _done(cloud, api, api.ok("post", "/v1/snapshots", 202, json={"name": "monday", "volume": "data"}))

    # Still enrolled: it may come back with its guests, so it cannot be removed.
    refused = cloud.admin.delete(f"/v1/hypervisors/{host}")
    assert refused.status_code == 409 and f"clctl hypervisor revoke {host}" in error_of(refused)["reason"]

    # The machine dies for good; the admin revokes it.  What it held blocks its removal, by count.
    cloud.leaves[host].stop()
    _revoke(cloud, host)
    refused = cloud.admin.delete(f"/v1/hypervisors/{host}")
    assert refused.status_code == 409, refused.text
    assert error_of(refused)["reason"].startswith(f"1 instances, 1 volumes, 1 snapshots still on {host}")

    # Its owner deletes it all, and no task waits for the dead host.
    _done(cloud, api, api.ok("delete", "/v1/instances/web", 202))
    _done(cloud, api, api.ok("delete", "/v1/volumes/data", 202))
    _done(cloud, api, api.ok("delete", "/v1/snapshots/monday", 202))
    compute = cloud.computes[host]
    assert (list(compute.instances), list(compute.volumes), list(compute.snapshots)) != ([], [], [])  # never asked

    assert error_of(api.delete(f"/v1/hypervisors/{host}"))["code"] == "forbidden"
    assert cloud.admin.delete(f"/v1/hypervisors/{host}").status_code == 204
    assert cloud.admin.get(f"/v1/hypervisors/{host}").status_code == 404
    assert [h["name"] for h in cloud.admin.ok("get", "/v1/hypervisors")["items"]] == [h for h in ("hv0", "hv1")
                                                                                      if h != host]
    removed = cloud.admin.ok("get", "/v1/events", params={"kind": "host.removed"})["items"]
    assert [e["host"] for e in removed] == [host]
    assert error_of(cloud.admin.delete(f"/v1/hypervisors/{host}"))["code"] == "not_found"
