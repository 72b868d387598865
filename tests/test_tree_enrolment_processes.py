"""Enrolment and revocation with real processes: a local cloud on CURVE, as ``make run`` starts it.

A node that is not enrolled, or whose token the frontend refuses, never joins and exits 2
saying why; a backend revoked with ``clctl`` is cut off within a few heartbeats and stays out
when it starts again with its old key.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from localcluster import LocalCluster
from service.nodekeys import EnrolmentToken
from tests.support.cloudapi import clctl, clctl_login, running, until

pytestmark = pytest.mark.slow

TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 2.0}
HEARTBEAT = TREE["heartbeat_interval"]
DEAD_AFTER = TREE["heartbeat_interval"] * TREE["heartbeat_misses"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", agents=1, backends=2, tree=TREE)
    with running(c):
        yield c


def exit_status(cluster: LocalCluster, name: str, timeout: float = 30.0) -> int:
    return cluster.procs[name].wait(timeout)


def states(cluster: LocalCluster) -> dict[str, str]:
    return {n["node_id"]: n["state"] for n in cluster.tree_status()}


def test_a_backend_without_a_token_never_joins(cluster: LocalCluster) -> None:
    cluster.start_backend("stray", enrol=False)
    assert exit_status(cluster, "stray") == 2
    log = cluster.log_text("stray")
    assert "cloudland-backend: stray is not enrolled in the tree" in log, log
    assert "clctl hypervisor enroll stray" in log and "enrolment_token_file" in log
    assert "stray" not in states(cluster)


def test_a_backend_with_a_wrong_token_never_joins(cluster: LocalCluster) -> None:
    someone_elses = cluster.enrolment_token("other")
    forged = EnrolmentToken("x" * 43, EnrolmentToken.parse(someone_elses).root_key).text()
    for name, token, reason in (("stray1", someone_elses, "this token enrols 'other', not 'stray1'"),
                                ("stray2", forged, "unknown enrolment token")):
        cluster.start_backend(name, token=token)
        assert exit_status(cluster, name) == 2
        log = cluster.log_text(name)
        assert f"cloudland-backend: enrolment refused: {reason}" in log, log
        assert "x" * 43 not in log and "x" * 43 not in cluster.log_text("frontend")
    assert not {"stray1", "stray2"} & set(states(cluster))
    # The refusal left the other node's token as it was: good for "other", once.
    cluster.start_backend("other", token=someone_elses)
    cluster.wait_attached(["other"], 30)


def test_clctl_revoke_cuts_a_running_backend_off_for_good(cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    clctl_login(home, cluster)
    enrolments = json.loads(clctl(home, "--json", "hypervisor", "enrolments").stdout)["items"]
    assert sorted((e["name"], e["state"]) for e in enrolments) == [
        ("agent0", "used"), ("host000", "used"), ("host001", "used")]
    victim, bystander = cluster.backend_names

    def shown() -> dict[str, object] | None:
        run = clctl(home, "--json", "hypervisor", "show", victim)
        return json.loads(run.stdout) if run.returncode == 0 else None  # 404 until the monitor registers it

    until(lambda: (shown() or {}).get("status") == "up", 30, f"{victim} registered")

    revoke = clctl(home, "hypervisor", "revoke", victim)
    assert revoke.returncode == 0, revoke.stderr
    assert f"{victim} is cut off from the tree" in revoke.stdout
    until(lambda: states(cluster)[victim] == "down", HEARTBEAT * 4, f"{victim} down")
    assert states(cluster)[bystander] == "up"
    assert (shown() or {}).get("enabled") is False

    # Started again, with the key it has: it never gets back in.
    cluster.kill(victim)
    cluster.start_backend(victim)
    time.sleep(DEAD_AFTER * 4)
    assert states(cluster)[victim] == "down" and cluster.procs[victim].poll() is None
    refused = [json.loads(line) for line in cluster.log_text("frontend").splitlines()
               if '"peer_refused"' in line or '"attach_refused"' in line]
    assert refused, "the frontend or the agent should log each refusal"
    ping = clctl(home, "ping", victim, "--timeout", "2")
    assert ping.returncode == 1, ping.stdout
    events = json.loads(clctl(home, "--json", "event", "list", "--host", victim).stdout)["items"]
    assert "host.revoked" in [e["kind"] for e in events]
