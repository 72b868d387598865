"""Hypervisors that are away from the tree for a while (a backend restarting, a host re-attaching
after its agent died): tasks wait for them instead of failing, placement passes them over, a
host that missed a network change gets its whole state when it is back, and the reconcile
deletes what a host holds that this cloud deleted or placed elsewhere meanwhile."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select, update

from frontend.db.models import Event, Hypervisor, Instance, Task, TaskStep, utcnow
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api
from tests.api.test_network_push import _launch, _tenant
from tests.support.waiting import until

pytestmark = pytest.mark.slow  # a tree and hosts in process: a few seconds each

#: a launch of one instance on the tenant's network
WEB = {"name": "web", "flavor": "small", "image": "tiny", "nics": [{"network": "net"}]}


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    yield from make_cloud(db_url, tmp_path / "frontend", hosts=3, networks=True)


def _task(cloud: Cloud, task_id: str) -> Task:
    with cloud.frontend.db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task


def test_a_delete_waits_for_its_host_and_finishes_once_it_is_back(cloud: Cloud) -> None:
    api = _tenant(cloud)
    web = _launch(cloud, api, "web")
    host = web["hypervisor"]
    cloud.away(host)
    task_id = api.ok("delete", "/v1/instances/web", 202)["task"]["id"]
    until(lambda: cloud.frontend.tasks.parked == 1, 10, "the delete parked")
    assert _task(cloud, task_id).status == "running"
    assert api.ok("get", "/v1/instances/web")["status"] == "deleting"
    assert web["id"] in cloud.computes[host].instances
    cloud.back(host)
    cloud.hosts.run_once()  # the monitor's round wakes it
    assert cloud.wait_task(api, task_id)["status"] == "succeeded"
    assert cloud.computes[host].instances == {} and cloud.frontend.tasks.parked == 0
    assert api.get("/v1/instances/web").status_code == 404


def test_a_host_gone_for_longer_than_host_wait_s_fails_the_task(cloud: Cloud) -> None:
    api = _tenant(cloud)
    web = _launch(cloud, api, "web")
    cloud.frontend.tasks.host_wait_s = 0.5  # less than the tree's reattach grace: the first send is final
    cloud.away(web["hypervisor"])
    task = cloud.wait_task(api, api.ok("delete", "/v1/instances/web", 202)["task"]["id"])
    assert task["status"] == "failed" and "host is down" in task["error"], task
    assert api.ok("get", "/v1/instances/web")["status"] == "error"


def test_placement_passes_over_hosts_the_tree_lost_before_the_monitor_marks_them_down(cloud: Cloud) -> None:
    api = _tenant(cloud)
    cloud.away("hv0")
    cloud.away("hv1")
    states = {h["name"]: h["status"] for h in cloud.admin.ok("get", "/v1/hypervisors")["items"]}
    assert states == {"hv0": "up", "hv1": "up", "hv2": "up"}  # the table has not heard yet
    web = _launch(cloud, api, "web")
    assert web["hypervisor"] == "hv2"
    with cloud.frontend.db.read() as session:
        steps = list(session.execute(select(TaskStep.name).join(Task, Task.id == TaskStep.task_id)
                                     .where(Task.resource_id == web["id"], Task.kind == "instance.create")).scalars())
    assert "launch.0" in steps and "launch.1" not in steps  # one attempt: none spent on the lost hosts


@pytest.mark.parametrize("marked_down", [False, True], ids=["away", "down"])
def test_a_launch_waits_while_every_host_with_room_is_away(cloud: Cloud, marked_down: bool) -> None:
    """Away from the tree before the monitor hears of it, or marked down by it (every host process
    restarting at once): either way a wait for them, not "no room"."""
    api = _tenant(cloud)
    for host in ("hv0", "hv1", "hv2"):
        cloud.away(host)
    if marked_down:
        cloud.hosts.run_once()
        assert {h["status"] for h in cloud.admin.ok("get", "/v1/hypervisors")["items"]} == {"down"}
    task_id = api.ok("post", "/v1/instances", 202, json=WEB)["task"]["id"]
    until(lambda: cloud.frontend.tasks.parked == 1, 10, "the launch parked")
    cloud.back("hv1")
    cloud.hosts.run_once()
    assert cloud.wait_task(api, task_id)["status"] == "succeeded"
    assert list(cloud.computes["hv1"].instances.values()) == ["running"]


def test_a_launch_that_lost_the_last_room_here_to_another_waits_for_hosts_away(cloud: Cloud) -> None:
    """The 2,000-hypervisor soak failed launches "no hypervisor has room for it" while most hosts
    were restarting: the few that were attached filled up, and a launch whose query still saw
    room on one lost it to another launch placed at the same moment.  Placement then gave up
    without looking at the hosts that were only away."""
    api = _tenant(cloud)
    cloud.away("hv0")
    cloud.away("hv1")
    cloud.hosts.run_once()
    scheduler = cloud.frontend.scheduler
    reserve = scheduler.reserve
    taken = {"hv2": True}  # hv2 fits by the query, but its last room goes to another launch first

    def racing(session: Any, host_id: str, need: Any) -> bool:
        host = session.get(Hypervisor, host_id)
        return False if taken.get(host.name) else reserve(session, host_id, need)

    scheduler.reserve = racing  # type: ignore[method-assign]
    task_id = api.ok("post", "/v1/instances", 202, json=WEB)["task"]["id"]
    until(lambda: cloud.frontend.tasks.parked == 1, 10, "the launch parked")
    cloud.back("hv0")
    cloud.hosts.run_once()
    task = cloud.wait_task(api, task_id)
    assert task["status"] == "succeeded", task
    assert list(cloud.computes["hv0"].instances.values()) == ["running"]


def test_a_host_down_for_longer_than_host_wait_s_is_not_waited_for(cloud: Cloud) -> None:
    api = _tenant(cloud)
    for host in ("hv0", "hv1", "hv2"):
        cloud.away(host)
    cloud.hosts.run_once()
    with cloud.frontend.db.transaction() as session:
        session.execute(update(Hypervisor).values(last_seen_at=utcnow() - dt.timedelta(hours=1)))
    task = cloud.wait_task(api, api.ok("post", "/v1/instances", 202, json=WEB)["task"]["id"])
    assert task["status"] == "failed" and task["error"] == "no hypervisor has room for it", task


def test_a_host_that_missed_a_network_change_gets_its_whole_state_once_attached(cloud: Cloud) -> None:
    api = _tenant(cloud)
    net = api.ok("get", "/v1/networks/net")["id"]
    web = _launch(cloud, api, "web")
    db = _launch(cloud, api, "db")
    if web["hypervisor"] == db["hypervisor"]:
        pytest.skip("the scheduler put both on one host")
    peer = db["hypervisor"]
    assert len(cloud.networks[peer].networks[net]["remote"]) == 1  # it tunnels to web
    cloud.away(peer)
    task = cloud.wait_task(api, api.ok("delete", "/v1/instances/web", 202)["task"]["id"])
    assert task["status"] == "succeeded", task  # the push does not wait for a host that is away
    cloud.back(peer)
    # The tree sees a new session here; a host re-attached under another agent keeps its session
    # and is not "returned": what brings it the change is the sync it is owed.
    cloud.root.drain_events()
    cloud.hosts.run_once()
    until(lambda: cloud.networks[peer].networks[net]["remote"] == [], 10, "the peer forgot web's port")


def test_the_reconcile_deletes_leftovers_and_leaves_unknown_guests_alone(cloud: Cloud) -> None:
    api = _tenant(cloud)
    web = _launch(cloud, api, "web")
    host, other = web["hypervisor"], next(h for h in cloud.computes if h != web["hypervisor"])
    cloud.computes[other].instances[web["id"]] = "running"  # a failed attempt's guest, its clean-up lost
    deleted = "0b5c9a4e-0000-4000-8000-00000000dead"  # deleted while its host was away
    cloud.computes[host].instances[deleted] = "running"
    with cloud.frontend.db.transaction() as session:
        session.add(Task(kind="instance.delete", org_id=api.who["org_id"], resource_type="instance",
                         resource_id=deleted, status="succeeded"))
    cloud.computes[host].instances["ghost-1234"] = "running"  # never this cloud's
    # Deleted while the reconcile's round was under way (here: "later"): its host's report may predate it.
    racing = "0b5c9a4e-0000-4000-8000-000000000ace"
    cloud.computes[host].instances[racing] = "running"
    with cloud.frontend.db.transaction() as session:
        session.add(Task(kind="instance.delete", org_id=api.who["org_id"], resource_type="instance",
                         resource_id=racing, status="succeeded", finished_at=utcnow() + dt.timedelta(hours=1)))
    cloud.reconciler.reap = False
    assert cloud.reconciler.run_once() == 3
    assert cloud.computes[other].instances == {web["id"]: "running"}  # reported, kept
    cloud.reconciler.reap = True
    assert cloud.reconciler.run_once() == 2
    assert cloud.computes[other].instances == {}
    assert cloud.computes[host].instances == {web["id"]: "running", "ghost-1234": "running", racing: "running"}
    with cloud.frontend.db.read() as session:
        drifts = sorted((e.kind, e.host, e.resource_id) for e in session.execute(
            select(Event).where(Event.kind.like("drift.%"))).scalars())
    assert drifts == sorted([("drift.leftover", other, web["id"]), ("drift.leftover", host, deleted),
                             ("drift.unknown", host, "ghost-1234"),
                             ("drift.reaped", other, web["id"]), ("drift.reaped", host, deleted)])
    assert cloud.reconciler.run_once() == 0  # nothing left but the unknown guest, already recorded


@pytest.fixture
def one_try(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    yield from make_cloud(db_url, tmp_path / "frontend", hosts=3, networks=True, max_attempts=1)


def _lose_the_host_mid_launch(cloud: Cloud, api: Api) -> tuple[str, str]:
    """Start a launch and take its host from the tree while it builds; the task's id and that host."""
    for compute in cloud.computes.values():
        compute.create_delay = 1.0
    task_id = api.ok("post", "/v1/instances", 202, json=WEB)["task"]["id"]

    def first_host() -> str | None:
        with cloud.frontend.db.read() as session:
            hosts = session.execute(select(TaskStep.hosts).where(TaskStep.task_id == task_id,
                                                                 TaskStep.name == "launch.0")).scalar()
        return hosts[0] if hosts else None
    until(lambda: first_host() is not None, 10, "the launch sent")
    host = first_host()
    assert host is not None
    cloud.away(host)
    return task_id, host


def test_a_host_lost_mid_launch_spends_none_of_its_attempts(one_try: Cloud) -> None:
    api = _tenant(one_try)
    task_id, lost = _lose_the_host_mid_launch(one_try, api)
    task = one_try.wait_task(api, task_id)
    assert task["status"] == "succeeded", task  # max_attempts is 1: the lost host's try was free
    with one_try.frontend.db.read() as session:
        instance = session.execute(select(Instance)).scalar_one()
        host = session.get(Hypervisor, instance.hypervisor_id)
        steps = list(session.execute(select(TaskStep.name).where(TaskStep.task_id == task_id)).scalars())
    assert host is not None and host.name != lost
    assert {"launch.0", "spent.0", "launch.1"} <= set(steps) and "launch.2" not in steps


def test_a_host_lost_mid_launch_after_host_wait_s_spends_an_attempt(one_try: Cloud) -> None:
    api = _tenant(one_try)
    one_try.frontend.tasks.host_wait_s = 0.5  # less than the create takes: the loss comes after it
    task_id, lost = _lose_the_host_mid_launch(one_try, api)
    task = one_try.wait_task(api, task_id)
    assert task["status"] == "failed" and lost in task["error"], task
