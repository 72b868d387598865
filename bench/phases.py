"""Measurements on a running tree: broadcast rounds, unicast throughput, failover, log audit.

Every command carries a unique tag (``{"round": tag}``) so that the simulated backends can
count how often each one ran.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sci

from .procs import Fleet
from .simhosts import TAG

__all__ = [
    "BroadcastLoop",
    "Recovery",
    "Round",
    "Unicast",
    "audit_logs",
    "broadcast",
    "choose_victim",
    "recover",
    "unicast",
]

BCAST_TIMEOUT = 30.0
#: Probes to the orphans of a killed agent: how often, and how long each may wait.
PROBE_EVERY = 0.05
PROBE_TIMEOUT = 15.0


@dataclass
class Round:
    """One broadcast: when it went out, how long until the last answer, and what failed."""

    tag: str
    submitted: float
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)  # host -> status name
    delivered_twice: int = 0


def broadcast(root: sci.TreeRoot, tag: str, timeout: float = BCAST_TIMEOUT) -> Round:
    """A no-op ``ping`` to every backend, gathered in full."""
    handle = root.submit("ping", {TAG: tag}, sci.Targets.all(), timeout=timeout)
    seen: collections.Counter[str] = collections.Counter()
    for host, _ in handle.results(timeout + 10):
        seen[host] += 1
    results = handle.wait(0)
    # The last answer's arrival is when the handle completed (the root finishes it in the same call).
    seconds = max((handle.latency(h) or 0.0 for h in results), default=time.monotonic() - handle.submitted)
    failed = {h: r.status.name for h, r in results.items() if not r.ok}
    return Round(tag, handle.submitted, seconds, failed, sum(n - 1 for n in seen.values()))


class BroadcastLoop(threading.Thread):
    """Broadcasts back to back until stopped: the traffic a failure has to happen under."""

    def __init__(self, root: sci.TreeRoot, prefix: str) -> None:
        super().__init__(name="bcast-loop", daemon=True)
        self.root = root
        self.prefix = prefix
        self.rounds: list[Round] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.rounds.append(broadcast(self.root, f"{self.prefix}{len(self.rounds)}"))

    def stop(self) -> None:
        self._halt.set()
        self.join(BCAST_TIMEOUT + 15)


@dataclass
class Unicast:
    per_s: float  # completed in the window / window
    sent: int
    failed: int
    latencies: list[float]


def unicast(root: sci.TreeRoot, hosts: list[str], seconds: float, in_flight: int, seed: int = 1) -> Unicast:
    """Pings to one random host each, ``in_flight`` outstanding at all times for ``seconds``."""
    slots = threading.BoundedSemaphore(in_flight)
    lock = threading.Lock()
    latencies: list[float] = []
    failed = [0]

    def finished(handle: sci.CommandHandle) -> None:  # in the root's thread
        ((host, result),) = handle.wait(0).items()
        with lock:
            latencies.append(handle.latency(host) or 0.0)
            failed[0] += not result.ok
        slots.release()

    rng = random.Random(seed)
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        if not slots.acquire(timeout=max(0.0, end - time.monotonic())):
            break
        handle = root.submit("ping", {TAG: f"u{sent}"}, sci.Targets.to(rng.choice(hosts)), timeout=BCAST_TIMEOUT)
        handle.add_done_callback(finished)
        sent += 1
    elapsed = time.monotonic() - start
    with lock:
        done_in_time = len(latencies)
    for _ in range(in_flight):  # drain, so that the next phase starts on a quiet tree
        slots.acquire(timeout=BCAST_TIMEOUT + 5)
    with lock:
        return Unicast(done_in_time / elapsed, sent, failed[0], list(latencies))


def choose_victim(root: sci.TreeRoot) -> tuple[str, list[str]]:
    """The agent with the most backends directly under it, and those backends."""
    nodes = root.nodes()
    agents = {n.node_id for n in nodes if n.role == "agent" and n.up}
    under: dict[str, list[str]] = collections.defaultdict(list)
    for n in nodes:
        if n.role == "backend" and n.up and n.parent in agents:
            under[n.parent].append(n.node_id)
    if not under:
        raise RuntimeError("no agent has backends under it: nothing to kill")
    victim = max(under, key=lambda a: (len(under[a]), a))
    return victim, sorted(under[victim])


@dataclass
class Recovery:
    killed_at: float
    back_at: float | None
    rounds: list[Round]
    probes_failed: int


def recover(root: sci.TreeRoot, fleet: Fleet, victim: str, orphans: list[str], lead: float = 1.0,
            trail: float = 1.0, timeout: float = 30.0) -> Recovery:
    """Kill -9 ``victim`` while broadcasts run; return when every orphan answered through a new parent."""
    loop = BroadcastLoop(root, "k")
    loop.start()
    time.sleep(lead)
    killed_at = time.monotonic()
    fleet.kill(victim)
    try:
        first_ok, probes_failed = _probe_until_back(root, orphans, killed_at + timeout)
        time.sleep(trail)
    finally:
        loop.stop()
    back_at = max(first_ok.values()) if len(first_ok) == len(orphans) else None
    return Recovery(killed_at, back_at, loop.rounds, probes_failed)


def _probe_until_back(root: sci.TreeRoot, orphans: list[str], end: float) -> tuple[dict[str, float], int]:
    """Ping the orphans every PROBE_EVERY; return each one's first OK arrival and the failed answers.

    Every probe is sent after the kill, so an OK can only have come through a new parent; a
    probe that found the old route broken is replayed by the root once the host is back, so
    its arrival time marks the moment of return, not the next probe.
    """
    lock = threading.Lock()
    first_ok: dict[str, float] = {}
    failed = [0]

    def finished(handle: sci.CommandHandle) -> None:  # in the root's thread
        with lock:
            for host, result in handle.wait(0).items():
                if not result.ok:
                    failed[0] += 1
                    continue
                at = handle.submitted + (handle.latency(host) or 0.0)
                first_ok[host] = min(first_ok.get(host, at), at)

    probes: list[sci.CommandHandle] = []
    while time.monotonic() < end:
        with lock:
            if len(first_ok) == len(orphans):
                break
        handle = root.submit("ping", {TAG: f"p{len(probes)}"}, sci.Targets.to(*orphans), timeout=PROBE_TIMEOUT)
        handle.add_done_callback(finished)
        probes.append(handle)
        time.sleep(PROBE_EVERY)
    for handle in probes:
        handle.wait(PROBE_TIMEOUT + 5)
    return first_ok, failed[0]


def audit_logs(log_dir: Path, victim: str | None) -> dict[str, Any]:
    """Count nodes declared dead that were alive: every child_dead / parent_lost not caused by the kill."""
    warnings: collections.Counter[str] = collections.Counter()
    false: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("*.log")):
        with open(path) as f:
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a traceback line: the JSON event before it is what counts
                name = event.get("event", "?")
                warnings[name] += 1
                deliberate = (name == "child_dead" and event.get("child") == victim) or (
                    name == "parent_lost" and event.get("parent") == victim)
                if name in ("child_dead", "parent_lost") and not deliberate:
                    false.append({"log": path.name, **{k: event.get(k) for k in
                                                        ("event", "node", "child", "parent", "reason")}})
    return {"false_failures": len(false), "false_failure_examples": false[:10], "log_events": dict(warnings)}
