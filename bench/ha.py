"""Standby frontends on PostgreSQL, measured: ``python -m bench.ha --hosts N --kills K``.

Real ``python -m frontend`` daemons (``--frontends``, 3 by default) share one PostgreSQL server
the run starts itself (``localcluster.LocalCluster(frontends=N)``); under them a real tree of
agent processes and N simulated hosts (``bench.simhosts``, as ``bench.tree`` runs them), each
given every frontend's tree endpoint.  Phases, in order:

1. idle: transactions a second on PostgreSQL and CPU seconds of each frontend, with no tree
   and again with every host attached (the lease's own rate, frontends / RENEW_S, beside it);
2. steady state: a ping of every host through the leader's API (the reference for the first
   command after a takeover);
3. a planned switchover (SIGTERM of the leader, which hands the lease over): the reference for
   the takeovers, measured with the same phases;
4. ``--kills`` times: kill -9 of the leader, then a new leader (its ``/readyz`` says it leads),
   the tree re-attached (every host up at its root, asked on its control socket), the first
   command answered (``POST /v1/tree/ping`` of every host through its API); meanwhile two
   clients read ``GET /v1/instances`` round-robin over every frontend's API, and a few instance
   launches are under way on the hosts that simulate a hypervisor.  The killed frontend is
   started again as a standby before the next kill;
5. the launches' outcome: each launch's task must succeed and its ``instance.create`` run
   exactly once, counted on the hosts.

The tree runs without CURVE (``tree: {curve: false}`` everywhere): enrolling 10,000 keys through
the API would dominate the run and a takeover does not re-enrol anything.  The launches run on
the frontend tests' in-memory compute driver (``tests/support/compute_ops.py``) in one process
of their own, on hosts of a zone of their own; the other hosts answer the backend's system ops.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import sci
from sci.reactor import Reactor
from service.config import ConfigError, LeadershipSection, check_leadership
from service.logs import setup_logging

from .procs import Fleet, cpu_seconds, prepare_child
from .simhosts import CountingExecutor, run_agent, run_sim, serve
from .tree import JOIN_WINDOW, RESULTS_DIR, _pct, default_agents

if TYPE_CHECKING:  # the frontend's stack is imported by the bench process only (see HaBench.run)
    import httpx

    from localcluster import LocalCluster

#: Hosts that simulate a hypervisor (the in-memory compute driver) in a zone of their own.
COMPUTE_HOSTS = 8
COMPUTE_ZONE = "ha"
#: Launches started just before each kill, half through a standby's API.
LAUNCHES_PER_KILL = 6
#: Seconds each launch takes on its host: long enough to be under way when the leader dies.
CREATE_DELAY_S = 2.0
#: Seconds between a launch's request and the kill.
KILL_AFTER_LAUNCH_S = 1.0
#: Readers of GET /v1/instances, and the pause between each one's calls (under the token's rate).
READERS = 2
READ_PAUSE_S = 0.05
#: Seconds the readers keep on after the first command is answered.
LOAD_TAIL_S = 1.0
#: The tree at rest before an idle measurement: start-up traffic dies down.
IDLE_SETTLE_S = 3.0
#: Steady pings of every host before the kills: the first command's reference.
STEADY_PINGS = 3
#: pings after a takeover's first command, each timed
NEXT_PINGS = 2
PING_TIMEOUT_S = 30.0
POLL_S = 0.05
TAKEOVER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Config:
    hosts: int
    kills: int
    frontends: int
    fanout: int
    sim_procs: int
    idle_s: float
    run_dir: Path
    #: the frontends' ``leadership:`` (the lease's timings)
    lease: LeadershipSection = field(default_factory=LeadershipSection)

    @property
    def agents(self) -> int:
        return default_agents(self.hosts, self.fanout)

    @property
    def compute_hosts(self) -> list[str]:
        return [f"c{i:03d}" for i in range(min(COMPUTE_HOSTS, self.hosts))]

    @property
    def ping_hosts(self) -> list[str]:
        return [f"h{i:05d}" for i in range(self.hosts - len(self.compute_hosts))]

    def host_groups(self) -> list[list[str]]:
        names = self.ping_hosts
        size = math.ceil(len(names) / self.sim_procs) if names else 1
        return [names[i:i + size] for i in range(0, len(names), size)]

    @property
    def settings(self) -> sci.TreeSettings:
        return sci.TreeSettings(fanout=self.fanout).validate()


# Child process: hosts with the in-memory compute driver -------------------------------------

def run_compute_sim(hosts: list[str], registrars: list[str], settings: sci.TreeSettings, log_path: str,
                    report_path: str, ops_log: str) -> None:
    """Hosts that launch instances in memory, each with its own driver and registry, until SIGTERM.

    Each op run is appended to ``ops_log`` (host, op, instance id), which the bench counts.
    """
    from backend.ops import system
    from backend.registry import OpRegistry
    from tests.support.compute_ops import RecordingCompute

    prepare_child()
    setup_logging("warning", service="sim", stream=open(log_path, "a", buffering=1))  # noqa: SIM115
    reactor = Reactor()
    runs: collections.Counter[tuple[str, Any]] = collections.Counter()
    leaves, registries = [], []
    for host in hosts:
        registry = OpRegistry(workers=4)
        system.register(registry, zone=COMPUTE_ZONE)
        compute = RecordingCompute(host, Path(ops_log))
        compute.create_delay = CREATE_DELAY_S
        compute.register(registry)
        registries.append(registry)
        leaves.append(sci.Leaf(host, registrars, settings, CountingExecutor(host, registry, runs),
                               sci.Journal(None), reactor=reactor))
    try:
        serve(reactor, leaves, len(leaves), report_path, runs)
    finally:
        for registry in registries:
            registry.close()


# The API under load ---------------------------------------------------------------------------

@dataclass
class LoadCounts:
    """The readers' calls: each attempt per endpoint, and each call after retries on the next."""

    attempts: dict[str, collections.Counter[str]] = field(default_factory=dict)
    calls: int = 0
    failed_first_try: int = 0
    failed_after_retry: int = 0

    def add(self, tried: list[tuple[str, str]]) -> None:
        """One call: the (endpoint, outcome) of each attempt, the last one ok unless all failed."""
        self.calls += 1
        self.failed_first_try += tried[0][1] != "ok"
        self.failed_after_retry += tried[-1][1] != "ok"
        for endpoint, outcome in tried:
            self.attempts.setdefault(endpoint, collections.Counter())[outcome] += 1

    def summary(self) -> dict[str, Any]:
        per_endpoint = {}
        for name, outcomes in sorted(self.attempts.items()):
            total = sum(outcomes.values())
            errors = total - outcomes["ok"]
            per_endpoint[name] = {"calls": total, "errors": errors, "error_rate": _ratio(errors, total),
                                  "outcomes": dict(outcomes)}
        return {"calls": self.calls, "failed_first_try": self.failed_first_try,
                "error_rate_first_try": _ratio(self.failed_first_try, self.calls),
                "failed_after_retry": self.failed_after_retry,
                "error_rate_after_retry": _ratio(self.failed_after_retry, self.calls),
                "per_endpoint": per_endpoint}


class ApiLoad:
    """Readers calling GET /v1/instances round-robin over every frontend's API; a failed call is
    tried again on the next endpoints in turn, as ``clctl`` does with several endpoints."""

    def __init__(self, urls: dict[str, str], tokens: list[str], verify: Any) -> None:
        self.urls = urls
        self.tokens = tokens
        self.verify = verify
        self.counts = LoadCounts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(i,), name=f"reader-{i}", daemon=True)
                         for i in range(len(tokens))]

    def start(self) -> ApiLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.counts.summary()

    def _read(self, index: int) -> None:
        import httpx

        names = list(self.urls)
        # A token each: the API's rate limit is per token, and two readers share none.
        headers = {"Authorization": f"Bearer {self.tokens[index]}"}
        clients = {n: httpx.Client(base_url=u, headers=headers, verify=self.verify, timeout=2.0)
                   for n, u in self.urls.items()}
        try:
            turn = index
            while not self._stop.is_set():
                tried = []
                for k in range(len(names)):
                    name = names[(turn + k) % len(names)]
                    tried.append((name, _read_once(clients[name])))
                    if tried[-1][1] == "ok":
                        break
                with self._lock:
                    self.counts.add(tried)
                turn += 1
                self._stop.wait(READ_PAUSE_S)
        finally:
            for client in clients.values():
                client.close()


def _read_once(client: httpx.Client) -> str:
    """"ok", the HTTP status of a refusal, or the name of the transport error."""
    import httpx

    try:
        status = client.get("/v1/instances", params={"limit": 10}).status_code
    except httpx.TransportError as exc:
        return type(exc).__name__
    return "ok" if 200 <= status < 300 else str(status)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 5) if whole else None


# The cloud ------------------------------------------------------------------------------------

def make_cluster(cfg: Config) -> LocalCluster:
    """Frontends on a PostgreSQL server of their own, with the tree's settings of this run."""
    from localcluster import LocalCluster

    # The product's reconcile interval (60 s), not the 5 s a local cloud uses for its tests: each
    # round asks every host, 10,000 of them here.
    return LocalCluster(cfg.run_dir / "cloud", agents=0, backends=0, frontends=cfg.frontends,
                        tree={"curve": False, "fanout": cfg.fanout}, log_level="warning",
                        frontend_config={"reconcile_interval_s": 60.0, "leadership": dataclasses.asdict(cfg.lease)})


def _psycopg_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


#: What pg_stat_database counts for the database, read before and after an idle period.
_DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated",
                "tup_deleted")


# The run ----------------------------------------------------------------------------------------

class HaBench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.fleet = Fleet()
        self.sims: list[str] = []
        self._cluster: LocalCluster | None = None
        self.leader = "frontend"  # the first frontend is started alone: it leads first
        self.tokens: list[str] = []
        self.launches: list[str] = []  # task ids
        self.out: dict[str, Any] = {
            "hosts": cfg.hosts, "compute_hosts": len(cfg.compute_hosts), "frontends": cfg.frontends,
            "agents": cfg.agents, "fanout": cfg.fanout, "sim_procs": cfg.sim_procs, "kills": cfg.kills,
            "curve": False, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "commit": _commit(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        }

    @property
    def cluster(self) -> LocalCluster:
        assert self._cluster is not None
        return self._cluster

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.out.update(lease_s=self.cfg.lease.lease_s, renew_s=self.cfg.lease.renew_s,
                        margin_s=self.cfg.lease.margin_s)
        try:
            self._cluster = make_cluster(self.cfg)
            try:
                self.cluster.start()
                for name in self.cluster.frontend_names:
                    self._wait(lambda n=name: self.readyz(n) is not None, 60, f"{name}'s API")  # type: ignore[misc]
                self.tokens = [self.login() for _ in range(1 + READERS)]
                self.measure_idle("idle_no_tree")
                self.start_tree()
                self.prepare_launches()
                self.measure_idle("idle_tree")
                self.measure_steady_pings()
                self.out["switchover"] = self.takeover(planned=True)
                self.out["takeovers"] = [self.takeover(planned=False) for _ in range(self.cfg.kills)]
                self.summarize()
                self.count_launches()
            except Exception as exc:  # noqa: BLE001 - still report what was measured up to here
                traceback.print_exc()
                self.out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.fleet.stop(grace=5.0)
            if self._cluster is not None:
                self._cluster.stop()
        self.out["wall_s"] = round(time.monotonic() - started, 1)
        return self.out

    # Talking to the frontends -------------------------------------------------------------

    def readyz(self, name: str) -> dict[str, Any] | None:
        """The frontend's /readyz body (200 or 503), or None while its API does not answer."""
        import httpx

        try:
            reply = httpx.get(f"{self.cluster.api_urls[name]}/readyz", verify=self.cluster.ssl_context(), timeout=1.0)
            return dict(reply.json())
        except (httpx.HTTPError, ValueError):
            return None

    def login(self) -> str:
        import httpx

        reply = httpx.post(f"{self.cluster.api_urls[self.leader]}/v1/tokens", verify=self.cluster.ssl_context(),
                           json={"username": "admin", "password": self.cluster.admin_password()}, timeout=30)
        reply.raise_for_status()
        return str(reply.json()["token"])

    def api(self, name: str, timeout: float = 60.0) -> httpx.Client:
        """An admin's client of frontend ``name``'s API."""
        import httpx

        return httpx.Client(base_url=self.cluster.api_urls[name], verify=self.cluster.ssl_context(), timeout=timeout,
                            headers={"Authorization": f"Bearer {self.tokens[0]}"})

    def hosts_up(self, name: str) -> tuple[int, int]:
        """Agents and backends up at frontend ``name``'s root; (-1, -1) while it has none."""
        from frontend.control import request

        try:
            reply = request(self.cluster.control_sockets[name], {"op": "tree", "timeout": 2.0}, 15.0)
        except (OSError, TimeoutError):
            return -1, -1
        nodes = [n for n in reply.get("nodes", ()) if n["state"] == "up"]
        return sum(n["role"] == "agent" for n in nodes), sum(n["role"] == "backend" for n in nodes)

    def _wait(self, check: Callable[[], Any], timeout: float, what: str, every: float = POLL_S) -> Any:
        end = time.monotonic() + timeout
        while not (result := check()):
            self.fleet.check()
            if time.monotonic() > end:
                raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")
            time.sleep(every)
        return result

    def run_pids(self) -> list[int]:
        """Every process of the cloud: the bench's children, the frontends and PostgreSQL's."""
        import psutil

        from .procs import run_pids

        pids = run_pids()  # the bench, its fork server and all it forked, the frontends too
        pg = self.cluster.pg
        if pg is not None and pg.postmaster_pid is not None:
            try:
                master = psutil.Process(pg.postmaster_pid)
                pids += [master.pid] + [p.pid for p in master.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return sorted(set(pids))

    # Idle -----------------------------------------------------------------------------------

    def measure_idle(self, key: str) -> None:
        """Transactions and rows a second on PostgreSQL, and each frontend's CPU, while nothing asks."""
        import psutil
        import psycopg

        time.sleep(IDLE_SETTLE_S)
        frontends = {n: self.cluster.procs[n].pid for n in self.cluster.frontend_names}
        pg = self.cluster.pg
        assert pg is not None and pg.postmaster_pid is not None and self.cluster.database is not None
        server = psutil.Process(pg.postmaster_pid)
        pg_pids = [server.pid] + [p.pid for p in server.children(recursive=True)]
        query = (f"SELECT {', '.join(_DB_COUNTERS)} FROM pg_stat_database WHERE datname = current_database()")
        with psycopg.connect(_psycopg_url(self.cluster.database), autocommit=True) as db:
            before_db = db.execute(query).fetchone()
            before = cpu_seconds([*frontends.values(), *pg_pids])
            time.sleep(self.cfg.idle_s)
            after = cpu_seconds([*frontends.values(), *pg_pids])
            after_db = db.execute(query).fetchone()
        assert before_db is not None and after_db is not None
        seconds = self.cfg.idle_s
        rates = {f"{k}_per_s": round((a - b) / seconds, 2) for k, b, a in zip(_DB_COUNTERS, before_db, after_db)}
        roles = {n: "leader" if n == self.leader else "standby" for n in frontends}
        self.out[key] = {
            "seconds": seconds, **rates,
            # Each frontend's lease statement, every RENEW_S: the lease's own rate, the reference.
            "lease_statements_per_s": round(len(frontends) / self.out["renew_s"], 2),
            "frontend_cpu_s": {f"{n} ({roles[n]})": round(after.get(p, 0.0) - before.get(p, 0.0), 2)
                               for n, p in frontends.items()},
            "postgres_cpu_s": round(sum(after.get(p, 0.0) - before.get(p, 0.0) for p in pg_pids), 2),
        }

    # The tree -------------------------------------------------------------------------------

    def start_tree(self) -> None:
        (self.cfg.run_dir / "reports").mkdir(parents=True, exist_ok=True)
        (self.cfg.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.start_agents()
        self.out["agents_up_s"] = round(time.monotonic() - started, 2)
        self.start_hosts()
        self.out["startup_s"] = round(time.monotonic() - started, 2)

    @property
    def registrars(self) -> list[str]:
        return list(self.cluster.frontend_endpoints.values())

    def start_agents(self) -> None:
        """Level by level, as bench.tree does: an agent is placed under agents already attached."""
        names = [f"agent-{i:03d}" for i in range(self.cfg.agents)]
        started = 0
        while started < len(names):
            room = self.cfg.fanout * (1 + started) - started
            for name in names[started:started + room]:
                self.fleet.spawn(name, run_agent, name, self.registrars, self.cfg.settings, self._log(name))
            started = min(len(names), started + room)
            self._wait(lambda n=started: self.hosts_up(self.leader)[0] >= n, 60 + started / 5,  # type: ignore[misc]
                       f"{started} agents", every=0.2)

    def start_hosts(self) -> None:
        groups = self.cfg.host_groups()
        window = max(1, JOIN_WINDOW // max(1, len(groups)))
        for i, group in enumerate(groups):
            name = f"sim-{i}"
            self.fleet.spawn(name, run_sim, group, self.registrars, self.cfg.settings, self._log(name),
                             self._report(name), window)
            self.sims.append(name)
        self.fleet.spawn("sim-compute", run_compute_sim, self.cfg.compute_hosts, self.registrars, self.cfg.settings,
                         self._log("sim-compute"), self._report("sim-compute"), str(self.ops_log))
        self.sims.append("sim-compute")
        self._wait(lambda: self.hosts_up(self.leader)[1] >= self.cfg.hosts, 120 + self.cfg.hosts / 20,
                   f"{self.cfg.hosts} hosts", every=0.5)

    @property
    def ops_log(self) -> Path:
        return self.cfg.run_dir / "compute-ops.log"

    def _log(self, name: str) -> str:
        return str(self.cfg.run_dir / "logs" / f"{name}.log")

    def _report(self, name: str) -> str:
        return str(self.cfg.run_dir / "reports" / f"{name}.json")

    # Launches -------------------------------------------------------------------------------

    def prepare_launches(self) -> None:
        """A flavor, an image (uploaded to the leader), and the compute hosts up with their facts."""
        from tests.support.qcow2 import fake_qcow2

        with self.api(self.leader) as api:
            api.post("/v1/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 128,
                                          "disk_gb": 1}).raise_for_status()
            image = api.post("/v1/images", json={"name": "tiny", "format": "qcow2"})
            image.raise_for_status()
            api.put(f"/v1/images/{image.json()['id']}/file", content=fake_qcow2()).raise_for_status()

            def ready(host: str) -> bool:
                reply = api.get(f"/v1/hypervisors/{host}")
                return reply.status_code == 200 and reply.json()["status"] == "up" and bool(reply.json()["facts"])

            self._wait(lambda: all(ready(h) for h in self.cfg.compute_hosts), 120, "the compute hosts' facts",
                       every=0.5)

    def launch(self, round_: str, standby: str) -> None:
        """LAUNCHES_PER_KILL instances, every other one through a standby's API."""
        with self.api(self.leader) as leader, self.api(standby) as other:
            for i in range(LAUNCHES_PER_KILL):
                reply = (other if i % 2 else leader).post("/v1/instances", json={
                    "name": f"{round_}-{i}", "flavor": "small", "image": "tiny", "zone": COMPUTE_ZONE})
                if reply.status_code != 202:
                    raise RuntimeError(f"launch {round_}-{i}: {reply.status_code} {reply.text}")
                self.launches.append(str(reply.json()["task"]["id"]))

    def read(self, path: str, **params: Any) -> Any:
        """GET ``path`` from the leader's API, or from any frontend that answers: a loaded machine
        can make the leader lose its lease and exit at any time, and every frontend reads the same."""
        import httpx

        names = [self.leader, *(n for n in self.cluster.api_urls if n != self.leader)]
        failures = []
        for name in names:
            try:
                with self.api(name) as api:
                    reply = api.get(path, params=params)
                if reply.status_code == 200:
                    return reply.json()
                failures.append(f"{name}: {reply.status_code}")
            except httpx.HTTPError as exc:
                failures.append(f"{name}: {type(exc).__name__}")
        raise RuntimeError(f"GET {path}: no frontend answered ({'; '.join(failures)})")

    def count_launches(self) -> None:
        """Each launch's task must succeed and its instance be built exactly once on the hosts."""
        def ended() -> list[dict[str, Any]] | None:
            tasks = [self.read(f"/v1/tasks/{t}") for t in self.launches]
            return tasks if all(t["status"] in ("succeeded", "failed") for t in tasks) else None

        tasks = self._wait(ended, 300, "every launch to end", every=1.0)
        down = self.read("/v1/events", kind="host.down", limit=1000)["items"]
        lines = self.ops_log.read_text().splitlines() if self.ops_log.exists() else []
        creates = collections.Counter(json.loads(line)["id"] for line in lines
                                      if json.loads(line)["op"] == "instance.create")
        instances = [t["resource_id"] for t in tasks]
        self.out["launches"] = {
            "launched": len(tasks),
            "succeeded": sum(t["status"] == "succeeded" for t in tasks),
            "failed": [t["error"] for t in tasks if t["status"] != "succeeded"][:5],
            "lost": sum(t["status"] != "succeeded" or creates[i] == 0 for t, i in zip(tasks, instances)),
            "doubled": sum(max(0, creates[i] - 1) for i in instances),
        }
        self.out["host_down_events"] = len(down)
        # One leader at the start, then one per switchover and kill: any other lost its lease on its own.
        leaders = self.read("/v1/events", kind="frontend.leader", limit=1000)["items"]
        self.out["leader_changes_unplanned"] = len(leaders) - (2 + self.cfg.kills)

    # Takeovers ------------------------------------------------------------------------------

    def measure_steady_pings(self) -> None:
        """The same ping of every host through the leader's API as a takeover's first command."""
        times = [self.ping_all(self.leader)[0] for _ in range(STEADY_PINGS)]
        self.out["steady_ping_p50_s"] = _pct(times, 50)

    def ping_all(self, name: str) -> tuple[float, int]:
        """Seconds of one ping of every host through frontend ``name``'s API, and the hosts that answered ok."""
        with self.api(name, timeout=PING_TIMEOUT_S + 30) as api:
            start = time.monotonic()
            reply = api.post("/v1/tree/ping", json={"timeout": PING_TIMEOUT_S})
            seconds = time.monotonic() - start
        if reply.status_code != 200:
            return seconds, 0
        return seconds, sum(r["status"] == "ok" for r in reply.json()["results"].values())

    def takeover(self, planned: bool) -> dict[str, Any]:
        """Stop the leader (SIGTERM if ``planned``, else kill -9) and time each phase of the takeover.

        Readers load the API throughout and launches are under way on the hosts; the stopped
        frontend is started again as a standby at the end.
        """
        old = self.leader
        survivors = [n for n in self.cluster.frontend_names if n != old]
        load = ApiLoad(self.cluster.api_urls, self.tokens[1:], self.cluster.ssl_context()).start()
        self.launch(f"t{len(self.out.get('takeovers', []))}{'s' if planned else 'k'}", survivors[0])
        time.sleep(KILL_AFTER_LAUNCH_S)
        pids = self.run_pids()
        cpu_before = cpu_seconds(pids)
        exited: list[float] = []
        proc = self.cluster.procs[old]
        threading.Thread(target=lambda: (proc.wait(), exited.append(time.monotonic())), daemon=True).start()
        stopped = time.monotonic()
        if planned:
            self.cluster.signal(old, signal.SIGTERM)
        else:
            self.cluster.kill(old)
        new, generation = self._wait(lambda: self._leading(survivors), TAKEOVER_TIMEOUT_S, "a new leader")
        led = time.monotonic()
        self.leader = new
        self._wait(lambda: self.hosts_up(new)[1] >= self.cfg.hosts, TAKEOVER_TIMEOUT_S, "the tree at the new root",
                   every=0.1)
        attached = time.monotonic()
        pings = 0
        while True:
            pings += 1
            _, answered = self.ping_all(new)
            if answered >= self.cfg.hosts or time.monotonic() - attached > TAKEOVER_TIMEOUT_S:
                break
        commanded = time.monotonic()
        cpu_after = cpu_seconds(pids)
        # Beside the first: what a ping costs once the takeover's one-time work is done.
        next_pings = [round(self.ping_all(new)[0], 3) for _ in range(NEXT_PINGS)]
        time.sleep(LOAD_TAIL_S)
        api = load.stop()
        proc.wait(30)
        self.cluster.start_frontend(old, wait=False)
        self._wait(lambda: self.readyz(old) is not None, 60, f"{old} back as a standby")
        return {
            "stopped": old, "how": "SIGTERM" if planned else "SIGKILL", "new_leader": new, "generation": generation,
            # -15 after SIGTERM: the process ended by the signal, not by its own clean stop.
            "exit_status": proc.returncode,
            "exited_s": round(exited[0] - stopped, 3) if exited else None, "leader_s": round(led - stopped, 3), "tree_s": round(attached - led, 3),
            "first_command_s": round(commanded - attached, 3), "total_s": round(commanded - stopped, 3),
            "first_command_pings": pings, "first_command_answered": answered, "next_pings_s": next_pings,
            # Of the processes that lived through it: the stopped frontend's last moments are not counted.
            "cpu_s": round(sum(cpu_after[p] - cpu_before[p] for p in cpu_before if p in cpu_after), 2),
            "api": api,
        }

    def _leading(self, names: list[str]) -> tuple[str, int] | None:
        for name in names:
            leader = (self.readyz(name) or {}).get("leader") or {}
            if leader.get("leading"):
                return name, int(leader["generation"])
        return None

    def summarize(self) -> None:
        """p50 of each phase over the kills, and the readers' calls summed over them."""
        kills = self.out["takeovers"]
        for phase in ("leader", "tree", "first_command", "total"):
            self.out[f"takeover_{phase}_p50_s"] = _pct([k[f"{phase}_s"] for k in kills], 50)
        self.out["takeover_cpu_s_p50"] = _pct([k["cpu_s"] for k in kills], 50)
        self.out["takeover_total_max_s"] = max((k["total_s"] for k in kills), default=None)
        calls = sum(k["api"]["calls"] for k in kills)
        first = sum(k["api"]["failed_first_try"] for k in kills)
        after = sum(k["api"]["failed_after_retry"] for k in kills)
        self.out["api_during_kills"] = {"calls": calls, "error_rate_first_try": _ratio(first, calls),
                                        "error_rate_after_retry": _ratio(after, calls),
                                        "per_endpoint_error_rate": self._endpoint_rates(kills)}

    @staticmethod
    def _endpoint_rates(kills: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
        """Per kill, each endpoint's error rate, named by its role in that kill."""
        out: dict[str, dict[str, float | None]] = {}
        for i, kill in enumerate(kills):
            for name, seen in kill["api"]["per_endpoint"].items():
                role = "killed" if name == kill["stopped"] else "new leader" if name == kill["new_leader"] else "standby"
                out.setdefault(f"kill {i}", {})[f"{name} ({role})"] = seen["error_rate"]
        return out


def _commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


# Output -------------------------------------------------------------------------------------

_HEADLINE = ["hosts", "frontends", "agents", "kills", "startup_s", "takeover_leader_p50_s", "takeover_tree_p50_s",
             "takeover_first_command_p50_s", "takeover_total_p50_s", "takeover_total_max_s", "takeover_cpu_s_p50",
             "steady_ping_p50_s", "lease_s", "renew_s", "api_during_kills", "launches", "host_down_events",
             "leader_changes_unplanned",
             "idle_no_tree", "idle_tree", "wall_s", "error"]


def format_table(out: dict[str, Any]) -> str:
    keys = [k for k in _HEADLINE if k in out]
    width = max(len(k) for k in keys)
    lines = [f"{k:<{width}}  {json.dumps(out[k], separators=(',', ':'))}" for k in keys]
    for takeover in [*([out["switchover"]] if "switchover" in out else []), *out.get("takeovers", [])]:
        lines.append(f"{takeover['how']:<8} {takeover['stopped']} -> {takeover['new_leader']}: exited "
                     f"{takeover['exited_s']} s, leader "
                     f"{takeover['leader_s']} s, tree {takeover['tree_s']} s, first command "
                     f"{takeover['first_command_s']} s (then {takeover.get('next_pings_s')}), total "
                     f"{takeover['total_s']} s, {takeover['cpu_s']} CPU s, "
                     f"API errors {takeover['api']['failed_first_try']} first try / "
                     f"{takeover['api']['failed_after_retry']} after retry of {takeover['api']['calls']}")
    return "\n".join(lines)


@click.command()
@click.option("--hosts", type=click.IntRange(COMPUTE_HOSTS + 1), default=1000, show_default=True,
              help="Simulated hosts (COMPUTE_HOSTS of them launch instances in memory).")
@click.option("--kills", type=click.IntRange(1), default=5, show_default=True, help="kill -9s of the leader.")
@click.option("--frontends", type=click.IntRange(2), default=3, show_default=True)
@click.option("--fanout", type=click.IntRange(2), default=32, show_default=True)
@click.option("--sim-procs", type=click.IntRange(1), help="Processes the hosts are spread over "
              "[default: max(2, ceil(hosts/2500))].")
@click.option("--idle-seconds", "idle_s", type=click.FloatRange(1.0), default=20.0, show_default=True,
              help="Length of each idle measurement.")
@click.option("--lease-s", type=float, default=LeadershipSection.lease_s, show_default=True,
              help="The frontends' leadership.lease_s.")
@click.option("--renew-s", type=float, default=LeadershipSection.renew_s, show_default=True,
              help="The frontends' leadership.renew_s.")
@click.option("--margin-s", type=float, default=LeadershipSection.margin_s, show_default=True,
              help="The frontends' leadership.margin_s.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Where to write the results [default: bench/results/ha-<hosts>.json].")
def main(hosts: int, kills: int, frontends: int, fanout: int, sim_procs: int | None, idle_s: float,
         lease_s: float, renew_s: float, margin_s: float, json_path: str | None) -> None:
    """Kill the leading frontend of a cloud of HOSTS simulated hosts and time each takeover."""
    run_dir = RESULTS_DIR / f"run-ha-{hosts}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    lease = LeadershipSection(lease_s, renew_s, margin_s)
    try:
        check_leadership(lease, "--lease-s/--renew-s/--margin-s")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    cfg = Config(hosts, kills, frontends, fanout, sim_procs or max(2, math.ceil(hosts / 2500)), idle_s, run_dir,
                 lease)
    setup_logging("warning", service="bench", stream=open(run_dir / "bench.log", "a", buffering=1))  # noqa: SIM115
    out = HaBench(cfg).run()
    path = Path(json_path) if json_path else RESULTS_DIR / f"ha-{hosts}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    click.echo(format_table(out))
    click.echo(f"\nwritten to {path}")
    if "error" in out:
        sys.exit(1)


if __name__ == "__main__":
    main()
