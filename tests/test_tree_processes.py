"""The tree as real processes on loopback: 1 frontend, 3 agents, 30 backends.

Failures are injected with real signals (kill -9, SIGSTOP/SIGCONT) and side effects are
counted in files, so "exactly once" is checked where it matters: on the hosts.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import zmq

from localcluster import LocalCluster, rack_of
from sci import KeyPair, Security, proto
from sci.enrolment import enrol
from sci.security import connect_curve
from service.nodekeys import EnrolmentToken
from tests.support.cloudapi import running

pytestmark = pytest.mark.slow

# Fast heartbeats keep the suite short: a node is dead after 1.5 s of silence.
TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0, "max_frame_bytes": 65536}
HOSTS = [f"host{i:03d}" for i in range(30)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", agents=3, backends=30, tree=TREE,
                     ops_modules=["tests.support.sideeffect_ops"])
    with running(c):
        yield c


def submit(c: LocalCluster, command: str, args: dict[str, Any] | None = None, hosts: list[str] | None = None,
           group: str | None = None, timeout: float = 10.0, cmd_id: str | None = None) -> dict[str, Any]:
    return c.control({"op": "submit", "command": command, "args": args or {}, "hosts": hosts, "group": group,
                      "timeout": timeout, "cmd_id": cmd_id}, timeout=timeout + 30)


def append_args(tmp: Path, **extra: Any) -> tuple[dict[str, Any], Path]:
    token = uuid.uuid4().hex[:8]
    path = tmp / f"side-{token}.log"
    return {"path": str(path), "line": token, **extra}, path


def in_background(call: Callable[[], dict[str, Any]]) -> concurrent.futures.Future[dict[str, Any]]:
    """Submit from another thread, so the test can break things while the command is out."""
    future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(call())
        except Exception as exc:  # surfaces in the test's thread at .result()
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def statuses(reply: dict[str, Any]) -> dict[str, str]:
    return {h: r["status"] for h, r in reply["results"].items()}


def events(c: LocalCluster, name: str, event: str, since: int = 0) -> list[dict[str, Any]]:
    """Records named ``event`` in a node's log, from character ``since`` on (see ``log_marks``)."""
    out = []
    for line in c.log_text(name)[since:].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            out.append(record)
    return out


def log_marks(c: LocalCluster, names: list[str]) -> dict[str, int]:
    """Where each node's log ends now, so a test sees only what happened after this point."""
    return {name: len(c.log_text(name)) for name in names}


def parent_of(c: LocalCluster) -> dict[str, str]:
    return {n["node_id"]: n["parent"] for n in c.tree_status()}


def test_broadcast_unicast_multicast(cluster: LocalCluster, tmp_path: Path) -> None:
    args, path = append_args(tmp_path)
    reply = submit(cluster, "test.append", args)
    assert statuses(reply) == {h: "ok" for h in HOSTS}
    assert len(lines(path)) == 30

    one = submit(cluster, "info", hosts=["host005"])
    assert list(one["results"]) == ["host005"]
    assert one["results"]["host005"]["payload"]["cpus"] >= 1

    some = submit(cluster, "ping", hosts=["host001", "host029", "nosuchhost"])
    assert statuses(some) == {"host001": "ok", "host029": "ok", "nosuchhost": "unreachable"}
    assert some["results"]["nosuchhost"]["message"] == "unknown host"

    rack = submit(cluster, "ping", group="rack1")
    members = {h for h in HOSTS if rack_of(h) == "rack1"}
    assert statuses(rack) == {h: "ok" for h in members}

    unknown = submit(cluster, "no.such.op", hosts=["host002"])
    assert unknown["results"]["host002"]["status"] == "error"
    assert unknown["results"]["host002"]["exit_status"] == 127


def test_agent_killed_during_broadcast(cluster: LocalCluster, tmp_path: Path) -> None:
    before = parent_of(cluster)
    orphans = [h for h in HOSTS if before[h] == "agent1"]
    assert orphans
    args, path = append_args(tmp_path, sleep_before=1.0)
    pending = in_background(lambda: submit(cluster, "test.append", args, timeout=20))
    time.sleep(0.4)  # the command is out and the handlers are sleeping
    cluster.kill("agent1")
    reply = pending.result(60)
    assert statuses(reply) == {h: "ok" for h in HOSTS}
    assert sorted(lines(path)) == sorted(set(lines(path))) and len(lines(path)) == 30
    after = parent_of(cluster)
    assert all(after[h] not in (None, "agent1") for h in orphans)
    for host in orphans:
        assert events(cluster, host, "parent_lost"), f"{host} did not log losing its parent"
        attached = events(cluster, host, "attached")
        assert attached[-1]["parent"] != "agent1"
    assert events(cluster, "frontend", "child_dead")


def test_backend_killed_is_unreachable_and_replays_from_journal(cluster: LocalCluster, tmp_path: Path) -> None:
    args, path = append_args(tmp_path)
    first = submit(cluster, "test.append", args, hosts=["host007"], cmd_id="cmd-journal-1")
    assert statuses(first) == {"host007": "ok"}

    cluster.kill("host007")
    reply = submit(cluster, "ping", timeout=4)
    assert reply["results"]["host007"]["status"] in ("unreachable", "timeout")
    assert all(s == "ok" for h, s in statuses(reply).items() if h != "host007")

    cluster.start_backend("host007")
    cluster.wait_attached(["host007"])
    again = submit(cluster, "test.append", args, hosts=["host007"], cmd_id="cmd-journal-1")
    assert statuses(again) == {"host007": "ok"}
    assert len(lines(path)) == 1, "a replayed command ran a second time"
    assert events(cluster, "host007", "command_replayed")


@pytest.mark.parametrize(("op", "host", "status", "runs"), [
    ("test.append", "host011", "error", 1),  # answered "interrupted", never run twice
    ("test.append-idempotent", "host012", "ok", 2),  # run again: twice is once for such an op
])
def test_backend_killed_mid_command(cluster: LocalCluster, tmp_path: Path, op: str, host: str, status: str,
                                    runs: int) -> None:
    args, path = append_args(tmp_path, sleep_after=3.0)
    pending = in_background(lambda: submit(cluster, op, args, hosts=[host], timeout=25))
    deadline = time.monotonic() + 10
    while not lines(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.kill(host)  # the side effect happened; the answer did not go out
    cluster.start_backend(host)
    reply = pending.result(60)
    result = reply["results"][host]
    assert result["status"] == status, result
    assert status == "ok" or "interrupted" in result["message"]
    assert len(lines(path)) == runs


def test_sigstop_agent_delivers_no_duplicates(cluster: LocalCluster, tmp_path: Path) -> None:
    args, path = append_args(tmp_path, sleep_before=0.5)
    pending = in_background(lambda: submit(cluster, "test.append", args, timeout=20))
    time.sleep(0.2)
    cluster.signal("agent0", signal.SIGSTOP)
    time.sleep(3.0)  # twice the dead-after time: everyone gave up on agent0
    cluster.signal("agent0", signal.SIGCONT)
    reply = pending.result(60)
    assert statuses(reply) == {h: "ok" for h in HOSTS}
    assert len(lines(path)) == 30
    # The stale relay comes back, is refused, attaches again and serves.
    cluster.wait_attached(["agent0"], timeout=20)
    args2, path2 = append_args(tmp_path)
    assert statuses(submit(cluster, "test.append", args2)) == {h: "ok" for h in HOSTS}
    assert len(lines(path2)) == 30


def test_root_pause_does_not_cascade(cluster: LocalCluster) -> None:
    before = parent_of(cluster)
    # Only what follows the pause counts: how the cluster came up is not this test's business.
    marks = log_marks(cluster, HOSTS)
    cluster.signal("frontend", signal.SIGSTOP)
    time.sleep(2.5)
    cluster.signal("frontend", signal.SIGCONT)
    cluster.wait_attached(["agent0", "agent1", "agent2", *HOSTS], timeout=20)
    after = parent_of(cluster)
    # The agents had to re-attach to the root; nothing below them moved.
    assert {h: after[h] for h in HOSTS} == {h: before[h] for h in HOSTS}
    assert statuses(submit(cluster, "ping")) == {h: "ok" for h in HOSTS}
    for host in HOSTS:
        assert not events(cluster, host, "parent_lost", since=marks[host])


def _agent_endpoint(c: LocalCluster, name: str) -> str:
    started = events(c, name, "relay_started")
    return str(started[-1]["listen"])


def _enrolled_intruder(c: LocalCluster, target: str) -> tuple[Security, str]:
    """A key enrolled as a node would be, and the target's public key: frames must get through
    CURVE to be read at all (a peer without it never completes the handshake)."""
    token = c.enrolment_token("intruder")
    security = Security(KeyPair.generate(), EnrolmentToken.parse(token).root_key)
    enrol(c.frontend_endpoint, "intruder", proto.Role.BACKEND, token, security, timeout=10)
    if target == "frontend":
        return security, security.root_key
    return security, KeyPair.load_or_create(c.workdir / "agents" / target / "tree.key").public


@pytest.mark.parametrize("target", ["frontend", "agent2"])
def test_bad_frames_are_dropped_and_node_keeps_serving(cluster: LocalCluster, target: str) -> None:
    endpoint = cluster.frontend_endpoint if target == "frontend" else _agent_endpoint(cluster, target)
    security, server_key = _enrolled_intruder(cluster, target)
    ctx = zmq.Context.instance()
    bad = [
        b"\xc1garbage",  # not msgpack
        proto.encode(proto.Kind.HEARTBEAT, 0)[:-1] + b"\x07",  # truncated/odd
        b"\x93\x63\x06\x00",  # wrong version (99)
        b"\x94\x01\x63\x00\x00",  # unknown kind
        proto.encode(proto.Kind.RESULTS, 0, "x", "not-an-int", {}),  # wrong field type
        proto.encode(proto.Kind.HELLO, 0, "bad id!", []),  # bad node id
        b"\x00" * 100_000,  # over the 64 KiB frame limit, under libzmq's cap
        b"\x00" * 1_000_000,  # over libzmq's cap: the connection is dropped
    ]
    for i, data in enumerate(bad):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.IDENTITY, f"intruder{i}".encode())
        connect_curve(sock, security, server_key)
        sock.connect(endpoint)
        sock.send(data)
        time.sleep(0.1)
        sock.close()
    time.sleep(0.5)
    reasons = {e["reason"] for e in events(cluster, target, "frame_dropped")}
    assert {"undecodable", "version", "malformed", "oversized"} <= reasons
    assert statuses(submit(cluster, "ping")) == {h: "ok" for h in HOSTS}


def test_host_joins_while_tree_is_busy(cluster: LocalCluster, tmp_path: Path) -> None:
    args, path = append_args(tmp_path, sleep_before=1.5)
    pending = in_background(lambda: submit(cluster, "test.append", args, timeout=20))
    time.sleep(0.2)
    cluster.start_backend("host030")
    cluster.wait_attached(["host030"])
    reply = pending.result(60)
    assert set(reply["results"]) == set(HOSTS)
    assert statuses(reply) == {h: "ok" for h in HOSTS}
    assert len(statuses(submit(cluster, "ping"))) == 31
    assert parent_of(cluster)["host030"].startswith("agent")
    assert os.path.exists(path)


def test_frontend_restart_rebuilds_the_tree(cluster: LocalCluster) -> None:
    before = parent_of(cluster)
    cluster.kill("frontend")
    cluster.start_frontend()
    cluster.wait_attached(["agent0", "agent1", "agent2", *HOSTS], timeout=30)
    after = parent_of(cluster)
    assert {h: after[h] for h in HOSTS} == {h: before[h] for h in HOSTS}
    assert statuses(submit(cluster, "ping")) == {h: "ok" for h in HOSTS}
