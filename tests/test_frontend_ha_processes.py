"""Standby frontends over a real tree: kill -9 the leader in the middle of launches.

Three frontends on one PostgreSQL server, agents and backends as real processes, each agent and
backend given every frontend's tree endpoint (``LocalCluster(frontends=3)``, what
``make run FRONTENDS=3`` runs).  Backends answer the compute ops from
``tests/support/compute_ops.py`` and log every op they run, so "exactly once" is counted on the
hosts.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from frontend.leadership import LEASE_S, RENEW_S
from localcluster import LocalCluster
from tests.support.cloudapi import admin_client, clctl, clctl_login, running, until
from tests.support.qcow2 import fake_qcow2

pytestmark = pytest.mark.slow

TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0}
BACKENDS = 30
LAUNCHES = 20
LAUNCH_SECONDS = 3.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", agents=3, backends=BACKENDS, tree=TREE, frontends=3,
                     ops_modules=["tests.support.compute_ops"],
                     env={"CLOUDLAND_TEST_COMPUTE_LOG": str(tmp_path / "ops.log"),
                          "CLOUDLAND_TEST_CREATE_DELAY": str(LAUNCH_SECONDS)})
    with running(c):
        yield c


def _offer_small(cluster: LocalCluster, hosts: int) -> httpx.Client:
    """An admin client, once all ``hosts`` are up with their capacity, of a cloud offering flavor
    ``small`` and image ``tiny``."""
    api = admin_client(cluster)
    until(lambda: len([h for h in api.get("/v1/hypervisors", params={"limit": 100}).json()["items"]
                       if h["status"] == "up" and h["facts"]]) == hosts, 60, "every hypervisor with capacity")
    api.post("/v1/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}).raise_for_status()
    image = api.post("/v1/images", json={"name": "tiny", "format": "qcow2"}).json()
    api.put(f"/v1/images/{image['id']}/file", content=fake_qcow2()).raise_for_status()
    return api


def _leading(cluster: LocalCluster, name: str) -> dict[str, Any] | None:
    try:
        ready = httpx.get(f"{cluster.api_urls[name]}/readyz", verify=cluster.ssl_context(), timeout=1.0).json()
    except httpx.TransportError:
        return None
    return dict(ready) if ready.get("leader", {}).get("leading") else None


def test_the_leader_killed_mid_launch_a_standby_finishes_every_launch_once(cluster: LocalCluster,
                                                                            tmp_path: Path) -> None:
    api = _offer_small(cluster, BACKENDS)
    agents = {name: cluster.procs[name].pid for name in cluster.agent_names}
    # Half the launches through a standby's API: it hands their tasks to the leader.
    standby = admin_client(cluster, api_url=cluster.api_urls[cluster.frontend_names[2]])
    tasks = []
    for i in range(LAUNCHES):
        accepted = (api if i % 2 else standby).post("/v1/instances", json={"name": f"vm{i}", "flavor": "small",
                                                                          "image": "tiny"})
        assert accepted.status_code == 202, accepted.text
        tasks.append(accepted.json()["task"]["id"])

    def launches_sent() -> bool:
        steps = [api.get(f"/v1/tasks/{t}").json()["steps"] for t in tasks]
        return sum(any(s["op"] == "instance.create" for s in st) for st in steps) >= LAUNCHES // 2

    until(launches_sent, 60, "half the launches to be sent")
    answers: list[int] = []
    reading = threading.Event()
    home = tmp_path / "home"
    clctl_login(home, cluster)  # every frontend's endpoint, the leader's first
    listed: list[tuple[float, float, int, str]] = []

    def read_through_the_takeover() -> None:
        while not reading.is_set():
            answers.append(standby.get("/v1/instances").status_code)
            time.sleep(0.1)

    def list_with_clctl_through_the_takeover() -> None:
        while not reading.is_set():
            began = time.monotonic()
            run = clctl(home, "instance", "list")
            listed.append((began, time.monotonic(), run.returncode, run.stderr.strip()))

    reader = threading.Thread(target=read_through_the_takeover)
    reader.start()
    lister = threading.Thread(target=list_with_clctl_through_the_takeover)
    lister.start()
    until(lambda: len(listed) >= 2, 30, "clctl to list through the leader")
    cluster.kill("frontend")  # kill -9 of the leader, hosts still building
    killed = time.monotonic()
    survivors = cluster.frontend_names[1:]
    new = until(lambda: next((n for n in survivors if _leading(cluster, n)), None), 30, "a standby to lead",
                every=0.05)
    took = time.monotonic() - killed
    assert took < LEASE_S + RENEW_S + 3.0, f"takeover took {took:.1f}s"
    assert _leading(cluster, new)["leader"]["generation"] == 2  # type: ignore[index]
    time.sleep(1.0)
    reading.set()
    reader.join()
    lister.join(60)
    assert answers and set(answers) == {200}, "a surviving frontend answers the API throughout the takeover"
    # clctl moves on to the next endpoint when the leader's is gone; only a call the leader held
    # when it was killed may fail (it may have been acted on: never sent again), and says why.
    failed = [(began, ended, why) for began, ended, code, why in listed if code != 0]
    assert all(began <= killed <= ended and "cannot reach the API" in why for began, ended, why in failed), failed
    after = [code for began, _, code, _ in listed if began > killed]
    assert len(failed) <= 1 and after and set(after) == {0}, listed

    # The tree found the new root by itself: every host under it, no agent restarted.
    cluster.wait_attached(cluster.backend_names, 30)
    assert {name: cluster.procs[name].pid for name in cluster.agent_names} == agents
    assert all(cluster.procs[name].poll() is None for name in cluster.agent_names)

    api = admin_client(cluster, api_url=cluster.api_urls[new])

    def ended() -> list[dict[str, Any]] | None:
        states = [api.get(f"/v1/tasks/{t}").json() for t in tasks]
        return states if all(t["status"] in ("succeeded", "failed") for t in states) else None

    final = until(ended, 90, "every task to end")
    assert [t["status"] for t in final] == ["succeeded"] * LAUNCHES, [t["error"] for t in final]
    instances = api.get("/v1/instances", params={"limit": 100}).json()["items"]
    assert sorted(i["status"] for i in instances) == ["active"] * LAUNCHES
    ops = [json.loads(line) for line in (tmp_path / "ops.log").read_text().splitlines()]
    creates = [o["id"] for o in ops if o["op"] == "instance.create"]
    assert sorted(creates) == sorted(i["id"] for i in instances), "each instance must be built exactly once"
    events = api.get("/v1/events", params={"limit": 500}).json()["items"]
    assert not [e for e in events if e["kind"] == "host.down"], "no host may be reported down by a takeover"
    assert [e["message"].split("@")[0] for e in events if e["kind"] == "frontend.leader"][:1] == [new]
    hosts = {h["name"]: h["status"] for h in api.get("/v1/hypervisors", params={"limit": 100}).json()["items"]}
    assert set(hosts.values()) == {"up"}, hosts


def test_a_rolling_restart_of_every_frontend_never_stops_the_api(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "cluster", agents=1, backends=3, tree=TREE, frontends=3,
                     ops_modules=["tests.support.compute_ops"],
                     env={"CLOUDLAND_TEST_COMPUTE_LOG": str(tmp_path / "ops.log")})
    with running(c):
        home = tmp_path / "home"
        clctl_login(home, c)
        api = _offer_small(c, 3)
        failures: list[str] = []
        calls = 0
        launched: list[str] = []
        done = threading.Event()

        def use_the_cloud() -> None:
            nonlocal calls
            while not done.is_set():
                listed = clctl(home, "instance", "list")
                calls += 1
                if listed.returncode != 0:
                    failures.append(listed.stderr.strip())
                if len(launched) >= 6:  # the hosts' room; listing goes on
                    continue
                made = clctl(home, "--json", "instance", "create", f"vm{len(launched)}", "--flavor", "small",
                             "--image", "tiny")
                if made.returncode != 0:
                    failures.append(made.stderr.strip())
                else:
                    launched.append(json.loads(made.stdout)["resource"]["id"])

        user = threading.Thread(target=use_the_cloud)
        user.start()
        try:
            for name in c.frontend_names:
                c.signal(name, signal.SIGTERM)
                assert c.procs[name].wait(30) in (0, 1), f"{name} did not stop cleanly"
                c.start_frontend(name, wait=False)
                until(lambda: _answers(c, name), 60, f"{name} to serve again")
                until(lambda: any(_leading(c, n) for n in c.frontend_names), 30, "a leader")
        finally:
            done.set()
            user.join(60)
        assert calls > 0 and not failures, failures
        api = admin_client(c, api_url=c.api_urls[next(n for n in c.frontend_names if _leading(c, n))])

        def all_active() -> bool:
            states = {i["id"]: i["status"] for i in api.get("/v1/instances").json()["items"]}
            return set(launched) <= set(states) and all(states[i] == "active" for i in launched)

        until(all_active, 90, "every instance launched during the restarts to be active")
        ops = [json.loads(line) for line in (tmp_path / "ops.log").read_text().splitlines()]
        creates = [o["id"] for o in ops if o["op"] == "instance.create"]
        assert sorted(creates) == sorted(launched), "each instance must be built exactly once"


def _answers(cluster: LocalCluster, name: str) -> bool:
    try:
        return httpx.get(f"{cluster.api_urls[name]}/healthz", verify=cluster.ssl_context(), timeout=1.0).is_success
    except httpx.TransportError:
        return False


def test_postgresql_restarted_under_load_loses_no_task_and_one_frontend_leads(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "cluster", agents=1, backends=3, tree=TREE, frontends=3,
                     ops_modules=["tests.support.compute_ops"],
                     env={"CLOUDLAND_TEST_COMPUTE_LOG": str(tmp_path / "ops.log"),
                          "CLOUDLAND_TEST_CREATE_DELAY": "2"})
    with running(c):
        api = _offer_small(c, 3)
        tasks = []
        for i in range(6):
            accepted = api.post("/v1/instances", json={"name": f"vm{i}", "flavor": "small", "image": "tiny"})
            assert accepted.status_code == 202, accepted.text
            tasks.append(accepted.json()["task"]["id"])
        until(lambda: any(s["op"] == "instance.create" for s in api.get(f"/v1/tasks/{tasks[0]}").json()["steps"]),
              30, "the first launch to be sent")

        # What systemd does for a frontend that exits (one that lost its lease meanwhile does).
        supervising = threading.Event()
        restarted: list[str] = []

        def supervise() -> None:
            while not supervising.wait(0.2):
                for name in c.frontend_names:
                    if c.procs[name].poll() is not None:
                        restarted.append(name)
                        c.start_frontend(name, wait=False)

        supervisor = threading.Thread(target=supervise)
        supervisor.start()
        try:
            assert c.pg is not None
            c.pg.restart(down_s=2.0)  # longer than a leader may go without renewing its lease
            leader = until(lambda: next((n for n in c.frontend_names if _leading(c, n)), None), 60,
                           "a frontend to lead again", every=0.1)
            survivor = admin_client(c, api_url=c.api_urls[leader])

            def ended() -> list[dict[str, Any]] | None:
                states = [survivor.get(f"/v1/tasks/{t}").json() for t in tasks]
                return states if all(t["status"] in ("succeeded", "failed") for t in states) else None

            final = until(ended, 120, "every launch to end")
            assert [t["status"] for t in final] == ["succeeded"] * len(tasks), [t["error"] for t in final]
            until(lambda: all(_answers(c, n) for n in c.frontend_names), 60, "every frontend to serve again")
            leaders = [n for n in c.frontend_names if _leading(c, n)]
        finally:
            supervising.set()
            supervisor.join(10)
        assert len(leaders) == 1, leaders
        for name in c.frontend_names:
            ready = httpx.get(f"{c.api_urls[name]}/readyz", verify=c.ssl_context(), timeout=5).json()
            assert ready["checks"]["database"] == "ok", (name, ready)
        instances = survivor.get("/v1/instances").json()["items"]
        assert sorted(i["status"] for i in instances) == ["active"] * len(tasks)
        ops = [json.loads(line) for line in (tmp_path / "ops.log").read_text().splitlines()]
        creates = [o["id"] for o in ops if o["op"] == "instance.create"]
        assert sorted(creates) == sorted(i["id"] for i in instances), "each instance must be built exactly once"
