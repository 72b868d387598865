"""A cloud under steady launches and deletes while its parts crash: ``python -m bench.soak --hypervisors N --instances M``.

The real frontend (one ``python -m frontend`` on a PostgreSQL server the run starts), real agent
processes and N simulated hypervisors (``bench.soak_hosts``: real ``sci.Leaf`` objects with the
backend's op registry, the frontend tests' in-memory compute and network drivers, spread over a
few processes, each host with its journal on disk).  Phases, in order:

1. the tree starts (agents level by level, then the hosts) and every host is up with its facts;
2. at rest: CPU seconds of each component and PostgreSQL's transactions over ``--idle-seconds``;
3. the soak: ``--clients`` API clients launch M instances at ``--rate`` a second in all, each with
   a NIC on one of ``--networks`` tenant networks and in a security group of the run (the
   frontend pushes ``net.sync`` with the ports and their group to the hosts of each network),
   and delete the oldest instance whenever more than ``--live`` are up; meanwhile an agent or a
   host process is killed (-9) at random every ``--chaos-seconds`` on average (0: never, the
   reference) and started again, and the frontend is killed (-9) once, half way, and started
   again (it resumes its tasks) unless ``--no-frontend-kill``; ``--max-minutes`` ends the load
   early, for a run that must end by a given time (``load_cut_short`` says it did);
4. the drain: every host back and every task ended (or the wait gives up: those are *lost*);
5. the reckoning: tasks succeeded / failed / lost, a launch run more than once on one host for one
   instance (*duplicated*, from the hosts' ops logs; deletes are idempotent, and their runs again
   are counted apart as *reruns*), and the database against the hosts' own
   views, again every few seconds until they agree or ``CONVERGE_S`` has passed: instances and
   ports on a host that the database does not place there (*orphans*), active ones the
   database places on a host that lacks them (*missing*), and each port's security groups.

Per-component CPU seconds come from /proc (a process killed is counted up to just before its
kill; PostgreSQL with its reaped backends), database rows from ``pg_stat_database`` and
statements from ``pg_stat_statements``, each over the soak and divided by the launches.
The tree runs without CURVE, as ``bench.ha`` does: enrolling thousands of keys would dominate
the run and no kill re-enrols anything.
"""

from __future__ import annotations

import collections
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from service.logs import setup_logging

from . import ha
from .ha import HaBench, _commit, _psycopg_url
from .procs import Fleet, MemorySampler
from .simhosts import run_agent
from .soak_hosts import read_views, run_soak_sim
from .tree import JOIN_WINDOW, RESULTS_DIR, _pct

if TYPE_CHECKING:  # the frontend's stack is imported by the bench process only
    import httpx
    import psycopg

    from localcluster import LocalCluster

#: The network the soak's ports are on: /20s out of 10.0.0.0/8, one per network.
SUBNET_BITS = 20
GROUP = "soak"
#: Seconds an instance lives at least before the deleter takes it (its launch has ended by then).
MIN_AGE_S = 5.0
#: A call the frontend did not answer is tried again after this pause (it may be restarting).
RETRY_PAUSE_S = 0.5
CALL_TIMEOUT_S = 30.0
#: How long a killed agent or host process stays down: what its children and the frontend notice.
DOWN_S = (0.5, 3.0)
#: The drain: every task ends within this, or it is counted lost.
DRAIN_TIMEOUT_S = 600.0
#: After the drain, how long the hosts' views may take to agree with the database, and how often to look.
CONVERGE_S = 120.0
CONVERGE_POLL_S = 5.0
IDLE_SETTLE_S = 3.0
#: How often the chaos thread looks at the clock and the launches (the frontend's kill is due half way).
CHAOS_TICK_S = 0.2
#: A launch or delete not taken within this (the frontend down for good) ends the run.
GIVE_UP_S = 300.0
#: What pg_stat_database counts, read before and after the soak.
DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated",
               "tup_deleted")


@dataclass(frozen=True)
class Config(ha.Config):
    """``bench.ha``'s run (one frontend; ``kills``: 1 to kill it half way, 0 not to) and the soak's load."""

    instances: int = 500
    rate: float = 5.0
    clients: int = 4
    networks: int = 10
    live: int = 100
    chaos_s: float = 20.0
    seed: int = 1
    #: seconds of load after which no more launches start (None: all ``instances``)
    max_load_s: float | None = None

    def host_indexes(self) -> list[list[int]]:
        """The hosts of each sim process, by index."""
        size = math.ceil(self.hosts / self.sim_procs)
        return [list(range(i, min(self.hosts, i + size))) for i in range(0, self.hosts, size)]


def make_cluster(cfg: Config) -> LocalCluster:
    """One frontend on a PostgreSQL server of its own that counts statements, reconciling at the
    product's interval (60 s), not the 5 s a local cloud uses for its tests."""
    import psycopg

    from localcluster import LocalCluster
    from localcluster.pgserver import PostgresServer

    pg = PostgresServer()
    pg.start()
    try:
        with psycopg.connect(_psycopg_url(pg.url("postgres")), autocommit=True) as db:
            db.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        pg.restart()
        database = pg.create_database("cloudland")
        with psycopg.connect(_psycopg_url(database), autocommit=True) as db:
            db.execute("CREATE EXTENSION pg_stat_statements")
        cluster = LocalCluster(cfg.run_dir / "cloud", agents=0, backends=0, frontends=1, database=database,
                               tree={"curve": False, "fanout": cfg.fanout}, log_level="warning",
                               frontend_config={"reconcile_interval_s": 60.0})
    except BaseException:
        pg.stop()
        raise
    cluster.pg = pg  # stopped with the cluster
    return cluster


# CPU of processes that come and go ----------------------------------------------------------

class CpuLedger:
    """CPU seconds per component, kept across kills: a process's seconds are banked just before
    it is killed, since /proc forgets it once it is reaped."""

    def __init__(self) -> None:
        self.banked: dict[str, float] = collections.defaultdict(float)

    @staticmethod
    def of(pid: int, with_children: bool = False) -> float:
        import psutil

        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return 0.0
        return t.user + t.system + (t.children_user + t.children_system if with_children else 0.0)

    def bank(self, component: str, pid: int) -> None:
        self.banked[component] += self.of(pid)


# The load -----------------------------------------------------------------------------------

@dataclass
class Calls:
    """Every API call of the soak: the latency of each answered one, and the failed attempts."""

    latency: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def summary(self) -> dict[str, Any]:
        every = [s for seconds in self.latency.values() for s in seconds]
        return {"calls": len(every), "p50_s": _pct(every, 50), "p99_s": _pct(every, 99),
                "max_s": round(max(every), 4) if every else None,
                "per_call": {k: {"calls": len(v), "p50_s": _pct(v, 50), "p99_s": _pct(v, 99)}
                             for k, v in sorted(self.latency.items())},
                "failed_attempts": dict(self.errors)}


class Load:
    """``clients`` threads launching ``total`` instances at ``rate`` a second in all (one shared
    schedule, so a slow call delays its client, not the rate), and deleting the oldest once more
    than ``live`` are up.  A launch the frontend did not answer is made again under a new name:
    the first may have been taken (it then shows in the database, counted with the rest)."""

    def __init__(self, bench: SoakBench, total: int, rate: float, clients: int, live: int, networks: list[str],
                 max_s: float | None = None) -> None:
        self.bench = bench
        self.total = total
        self.max_s = max_s
        #: whether the load stopped at ``max_s`` before ``total`` launches
        self.cut_short = False
        self.rate = rate
        self.live_cap = live
        self.networks = networks
        self.calls = Calls()
        self.launched = 0
        self.deletes = 0
        self.instances: collections.deque[tuple[str, float]] = collections.deque()
        self._next = 0
        self._lock = threading.Lock()
        self._start = 0.0
        self._threads = [threading.Thread(target=self._client, args=(i,), name=f"client-{i}", daemon=True)
                         for i in range(clients)]
        self.errors: list[str] = []

    def start(self) -> Load:
        self._start = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def half_way(self) -> bool:
        """Half the launches made, or half the time given used."""
        return self.launched >= self.total // 2 or (self.max_s is not None
                                                    and time.monotonic() - self._start >= self.max_s / 2)

    def _slot(self) -> int | None:
        with self._lock:
            if self._next >= self.total:
                return None
            if self.max_s is not None and time.monotonic() - self._start >= self.max_s:
                self.cut_short = True
                return None
            self._next += 1
            return self._next - 1

    def _client(self, index: int) -> None:
        try:
            with self.bench.api(token=self.bench.tokens[1 + index], timeout=CALL_TIMEOUT_S) as api:
                while (slot := self._slot()) is not None:
                    time.sleep(max(0.0, self._start + slot / self.rate - time.monotonic()))
                    self._launch(api, slot)
                    self._delete_oldest(api)
        except Exception as exc:  # noqa: BLE001 - reported; the other clients go on
            traceback.print_exc()
            self.errors.append(f"client {index}: {type(exc).__name__}: {exc}")

    def _call(self, api: httpx.Client, kind: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """One call, timed; None if the frontend did not answer (the attempt is counted)."""
        import httpx

        started = time.monotonic()
        try:
            reply = api.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            with self._lock:
                self.calls.errors[f"{kind}: {type(exc).__name__}"] += 1
            return None
        with self._lock:
            if reply.status_code < 500:
                self.calls.latency[kind].append(time.monotonic() - started)
            else:
                self.calls.errors[f"{kind}: {reply.status_code}"] += 1
        return reply

    def _launch(self, api: httpx.Client, slot: int) -> None:
        attempt = 0
        give_up = time.monotonic() + GIVE_UP_S
        while time.monotonic() < give_up:
            body = {"name": f"s{slot}-{attempt}", "flavor": "small", "image": "tiny",
                    "nics": [{"network": self.networks[slot % len(self.networks)], "security_groups": [GROUP]}]}
            reply = self._call(api, "launch", "POST", "/v1/instances", json=body)
            if reply is not None and reply.status_code == 202:
                with self._lock:
                    self.launched += 1
                    self.instances.append((str(reply.json()["resource"]["id"]), time.monotonic()))
                return
            if reply is not None and reply.status_code < 500 and reply.status_code != 429:
                raise RuntimeError(f"launch refused: {reply.status_code} {reply.text[:300]}")
            attempt += 1
            time.sleep(RETRY_PAUSE_S)
        raise RuntimeError(f"launch {slot} not taken in {GIVE_UP_S:.0f} s")

    def _delete_oldest(self, api: httpx.Client) -> None:
        with self._lock:
            if len(self.instances) <= self.live_cap or time.monotonic() - self.instances[0][1] < MIN_AGE_S:
                return
            instance, launched = self.instances.popleft()
        give_up = time.monotonic() + GIVE_UP_S
        while time.monotonic() < give_up:
            reply = self._call(api, "delete", "DELETE", f"/v1/instances/{instance}")
            if reply is None or reply.status_code >= 500 or reply.status_code == 429:
                time.sleep(RETRY_PAUSE_S)
                continue
            if reply.status_code == 202:
                with self._lock:
                    self.deletes += 1
            elif reply.status_code == 409:  # still building (its launch outlived MIN_AGE_S): later
                with self._lock:
                    self.instances.append((instance, launched))
            elif reply.status_code != 404:  # 404: a delete that timed out on the wire was taken
                raise RuntimeError(f"delete refused: {reply.status_code} {reply.text[:300]}")
            return
        raise RuntimeError(f"delete of {instance} not taken in {GIVE_UP_S:.0f} s")


# The run ------------------------------------------------------------------------------------

class SoakBench(HaBench):
    """``bench.ha``'s cloud plumbing (the tree's start, the API, the waits), with one frontend."""

    cfg: Config

    def __init__(self, cfg: Config) -> None:  # HaBench's own set-up describes its phases, not these
        self.cfg = cfg
        self.fleet = Fleet()
        self.sims: list[str] = []
        self._cluster = None
        self.leader = "frontend"
        self.tokens: list[str] = []
        self.cpu = CpuLedger()
        self.rng = random.Random(cfg.seed)
        self.sim_args: dict[str, tuple[Any, ...]] = {}
        self.kills: list[dict[str, Any]] = []
        self.load: Load | None = None
        self._stop_chaos = threading.Event()
        self.out: dict[str, Any] = {
            "hypervisors": cfg.hosts, "instances": cfg.instances, "rate_per_s": cfg.rate, "clients": cfg.clients,
            "networks": cfg.networks, "live": cfg.live, "chaos_s": cfg.chaos_s, "frontend_kills": cfg.kills,
            "agents": cfg.agents, "fanout": cfg.fanout, "sim_procs": cfg.sim_procs, "seed": cfg.seed, "curve": False,
            "database": "postgresql", "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "machine": platform.machine(), "commit": _commit(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        }

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        memory = MemorySampler().start()
        try:
            self._cluster = make_cluster(self.cfg)
            try:
                self.cluster.start()
                self._wait(lambda: self.readyz("frontend") is not None, 60, "the frontend's API")
                self.tokens = [self.login() for _ in range(1 + self.cfg.clients)]
                self.start_tree()
                networks = self.prepare()
                self.measure_at_rest()
                self.soak(networks)
                self.reckon()
            except Exception as exc:  # noqa: BLE001 - still report what was measured up to here
                traceback.print_exc()
                self.out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self._stop_chaos.set()
            self.fleet.stop(grace=10.0)
            if self._cluster is not None:
                self._cluster.stop()
            memory.stop()
        # Others' work on this machine shows here: the figures are this machine's, shared.
        self.out["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        self.out["peak_memory_mb"] = round(memory.peak_mb)
        self.out["wall_s"] = round(time.monotonic() - started, 1)
        return self.out

    def api(self, name: str = "frontend", timeout: float = 60.0, token: str | None = None) -> httpx.Client:
        import httpx

        return httpx.Client(base_url=self.cluster.api_urls[name], verify=self.cluster.ssl_context(), timeout=timeout,
                            headers={"Authorization": f"Bearer {token or self.tokens[0]}"})

    def db(self) -> psycopg.Connection[Any]:
        import psycopg

        assert self.cluster.database is not None
        return psycopg.connect(_psycopg_url(self.cluster.database), autocommit=True)

    # The tree ---------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.cfg.run_dir / "hosts"

    def start_hosts(self) -> None:
        groups = self.cfg.host_indexes()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        window = max(1, JOIN_WINDOW // len(groups))
        for i, group in enumerate(groups):
            name = f"sim-{i}"
            # Kept to start the process again after its kill, on the same state.
            self.sim_args[name] = (run_soak_sim, name, group, self.registrars, self.cfg.settings, self._log(name),
                                   self._report(name), str(self.state_dir), window)
            self.fleet.spawn(name, *self.sim_args[name])
            self.sims.append(name)
        self._wait(lambda: self.hosts_up(self.leader)[1] >= self.cfg.hosts, 120 + self.cfg.hosts / 20,
                   f"{self.cfg.hosts} hosts", every=0.5)

    def prepare(self) -> list[str]:
        """A flavor, an image, the networks and the group; every host up with its facts (its VTEP)."""
        from tests.support.qcow2 import fake_qcow2

        with self.api() as api:
            def ok(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
                reply = api.request(method, url, **kwargs)
                reply.raise_for_status()
                return dict(reply.json()) if reply.content else {}

            ok("POST", "/v1/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1})
            image = ok("POST", "/v1/images", json={"name": "tiny", "format": "qcow2"})
            ok("PUT", f"/v1/images/{image['id']}/file", content=fake_qcow2())
            ok("POST", "/v1/security-groups", json={"name": GROUP})
            ok("POST", f"/v1/security-groups/{GROUP}/rules", json={"direction": "ingress", "protocol": "tcp",
                                                                    "port_min": 22})
            names = []
            for k in range(self.cfg.networks):
                name = f"net{k}"
                ok("POST", "/v1/networks", json={"name": name})
                # /20s from 10.0.0.0: room for a network's share of the live instances and their churn
                cidr = f"10.{(k << (SUBNET_BITS - 16)) >> 8 & 255}.{(k << (SUBNET_BITS - 16)) & 255}.0/{SUBNET_BITS}"
                ok("POST", "/v1/subnets", json={"name": f"{name}-sub", "network": name, "cidr": cidr})
                names.append(name)
        with self.db() as db:
            def ready() -> bool:
                row = db.execute("SELECT count(*) FROM hypervisors WHERE status = 'up' AND facts::jsonb ? 'vtep'"
                                 ).fetchone()
                return row is not None and row[0] >= self.cfg.hosts

            self._wait(ready, 120 + self.cfg.hosts / 20, "every host's facts", every=0.5)
        return names

    # Measurements -----------------------------------------------------------------------------

    def component_pids(self) -> dict[str, list[int]]:
        procs = self.fleet.procs
        pg = self.cluster.pg
        assert pg is not None and pg.postmaster_pid is not None
        return {
            "frontend": [self.cluster.procs["frontend"].pid],
            "agents": [self.fleet.pid(n) for n in procs if n.startswith("agent-")],
            "sims": [self.fleet.pid(n) for n in procs if n.startswith("sim-")],
            "postgres": [pg.postmaster_pid],
        }

    def cpu_now(self) -> dict[str, float]:
        """Each component's CPU seconds so far, banked kills included; PostgreSQL's postmaster with
        the backends it reaped, and those still running."""
        import psutil

        out = {}
        for component, pids in self.component_pids().items():
            seconds = sum(self.cpu.of(p, with_children=component == "postgres") for p in pids)
            if component == "postgres":
                try:
                    seconds += sum(self.cpu.of(c.pid) for c in psutil.Process(pids[0]).children())
                except psutil.Error:
                    pass
            out[component] = seconds + self.cpu.banked[component]
        return out

    def db_counters(self) -> dict[str, int]:
        with self.db() as db:
            row = db.execute(f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database "
                             "WHERE datname = current_database()").fetchone()
            statements = db.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                                    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                                    ).fetchone()
        assert row is not None and statements is not None
        return {**dict(zip(DB_COUNTERS, (int(v) for v in row))), "statements": int(statements[0])}

    def measure_at_rest(self) -> None:
        """The cloud at rest: CPU of each component and the database's work, per second and per host."""
        time.sleep(IDLE_SETTLE_S)
        cpu_before, db_before = self.cpu_now(), self.db_counters()
        time.sleep(self.cfg.idle_s)
        cpu_after, db_after = self.cpu_now(), self.db_counters()
        seconds = self.cfg.idle_s
        cpu = {k: round((cpu_after[k] - cpu_before[k]) / seconds, 4) for k in cpu_before}
        self.out["at_rest"] = {
            "seconds": seconds,
            "cpu_cores": cpu,
            "cpu_cores_per_hypervisor": {k: round(v / self.cfg.hosts, 7) for k, v in cpu.items()},
            "db_per_s": {k: round((db_after[k] - db_before[k]) / seconds, 2) for k in db_before},
        }

    # The soak ---------------------------------------------------------------------------------

    def soak(self, networks: list[str]) -> None:
        cpu_before, db_before = self.cpu_now(), self.db_counters()
        started = time.monotonic()
        self.load = Load(self, self.cfg.instances, self.cfg.rate, self.cfg.clients, self.cfg.live, networks,
                         self.cfg.max_load_s).start()
        chaos = threading.Thread(target=self.chaos, name="chaos", daemon=True)
        chaos.start()
        self.load.join()
        loaded = time.monotonic()
        self._stop_chaos.set()
        chaos.join()
        self.drain()
        drained = time.monotonic()
        cpu_after, db_after = self.cpu_now(), self.db_counters()
        launched = self.load.launched
        self.out["load_s"] = round(loaded - started, 1)
        self.out["drain_s"] = round(drained - loaded, 1)
        self.out["launches"] = launched
        self.out["load_cut_short"] = self.load.cut_short
        self.out["deletes"] = self.load.deletes
        self.out["launches_per_s"] = round(launched / (loaded - started), 2)
        self.out["launches_per_hypervisor_per_min"] = round(launched / self.cfg.hosts / ((loaded - started) / 60), 4)
        self.out["api"] = self.load.calls.summary()
        self.out["client_errors"] = self.load.errors
        self.out["kills"] = self.kills
        cpu = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_before}
        self.out["cpu_s"] = cpu
        self.out["cpu_s_per_launch"] = {k: round(v / max(1, launched), 5) for k, v in cpu.items()}
        db = {k: db_after[k] - db_before[k] for k in db_before}
        self.out["db"] = db
        self.out["db_per_launch"] = {k: round(v / max(1, launched), 2) for k, v in db.items()}
        if self.load.errors:
            raise RuntimeError(f"API clients failed: {self.load.errors[0]}")

    def chaos(self) -> None:
        """kill -9 an agent or a host process at random moments (each started again), and the frontend once."""
        assert self.load is not None
        # Agents or host processes, even odds: there are many more agents than host processes.
        victims = [sorted(n for n in self.fleet.procs if n.startswith("agent-")), list(self.sims)]
        frontend_due = self.cfg.kills > 0
        next_kill = self._next_kill()
        while not self._stop_chaos.wait(CHAOS_TICK_S):
            self.restart_ended_frontend()
            if frontend_due and self.load.half_way():
                frontend_due = False
                self.kill_frontend()
            if time.monotonic() >= next_kill:
                self.kill_child(self.rng.choice(self.rng.choice(victims)))
                next_kill = self._next_kill()

    def _next_kill(self) -> float:
        if not self.cfg.chaos_s:
            return math.inf
        return time.monotonic() + self.rng.expovariate(1 / self.cfg.chaos_s)

    def kill_child(self, name: str) -> None:
        component = "agents" if name.startswith("agent-") else "sims"
        self.cpu.bank(component, self.fleet.pid(name))
        killed = time.monotonic()
        self.fleet.kill(name)
        self.fleet.procs[name].join(10)
        down = self.rng.uniform(*DOWN_S)
        time.sleep(down)
        if component == "agents":
            self.fleet.spawn(name, run_agent, name, self.registrars, self.cfg.settings, self._log(name))
        else:
            self.fleet.spawn(name, *self.sim_args[name])
        self.kills.append({"what": name, "at_s": round(killed - self._load_start(), 1), "down_s": round(down, 2)})

    def kill_frontend(self) -> None:
        """kill -9 the frontend, start it again, and time until its API answers and it leads the tree."""
        self.cpu.bank("frontend", self.cluster.procs["frontend"].pid)
        killed = time.monotonic()
        self.cluster.kill("frontend")
        self.cluster.start_frontend("frontend", wait=True)
        self._wait(lambda: self.readyz("frontend") is not None, 60, "the restarted frontend's API")
        answering = time.monotonic()
        self._wait(lambda: self.hosts_up("frontend")[1] >= self.cfg.hosts, 120 + self.cfg.hosts / 20,
                   "the tree back at the restarted frontend", every=0.2)
        self.kills.append({"what": "frontend", "at_s": round(killed - self._load_start(), 1),
                           "api_back_s": round(answering - killed, 2),
                           "tree_back_s": round(time.monotonic() - killed, 2)})

    def restart_ended_frontend(self) -> None:
        """Start the frontend again if it ended on its own, as systemd's Restart=on-failure would.

        A frontend on PostgreSQL whose lease renewals a loaded machine held up past the lease's
        safe span steps down and exits 1 for its supervisor: without one the run would go on
        without a frontend (a run of 2026-12-07 lost its frontend so).  Its CPU seconds are lost to the
        ledger: /proc forgot them when it was reaped."""
        code = self.cluster.procs["frontend"].poll()
        if code is None:
            return
        ended = time.monotonic()
        print(f"the frontend exited with status {code}; started again", flush=True)
        self.cluster.start_frontend("frontend", wait=True)
        self._wait(lambda: self.readyz("frontend") is not None, 60, "the restarted frontend's API")
        self.kills.append({"what": "frontend", "how": f"exited {code}", "at_s": round(ended - self._load_start(), 1),
                           "api_back_s": round(time.monotonic() - ended, 2)})

    def _load_start(self) -> float:
        assert self.load is not None
        return self.load._start  # noqa: SLF001 - the soak's own clock

    def drain(self) -> None:
        """Wait for every host to be up again and every task to end."""
        self._wait(lambda: self.hosts_up("frontend")[1] >= self.cfg.hosts, 120 + self.cfg.hosts / 20,
                   "every host back after the kills", every=0.5)
        end = time.monotonic() + DRAIN_TIMEOUT_S
        with self.db() as db:
            while time.monotonic() < end:
                row = db.execute("SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')").fetchone()
                if row is not None and row[0] == 0:
                    return
                self.fleet.check()
                time.sleep(1.0)

    # The reckoning ------------------------------------------------------------------------------

    def reckon(self) -> None:
        """Tasks by outcome, duplicated runs, and the database against the hosts' own views.

        A host that was away while its networks changed gets its whole state when it rejoins,
        outside any task: the views are compared until they agree or CONVERGE_S has passed."""
        started = time.monotonic()
        while True:
            tasks, agreement = self.compare_now()
            if agreement["disagreements"] == 0 or time.monotonic() - started > CONVERGE_S:
                break
            self.out.setdefault("agreement_at_drain", agreement)
            time.sleep(CONVERGE_POLL_S)
        self.out["converged_after_s"] = round(time.monotonic() - started, 1)
        self.out["tasks"] = task_outcomes(tasks, self.host_runs())
        self.out["agreement"] = agreement
        with self.db() as db:
            # What the frontend itself saw of the disagreements: its reconcile's drift events.
            drift = db.execute("SELECT kind, count(*) FROM events WHERE kind LIKE 'drift.%' GROUP BY kind").fetchall()
        self.out["drift_events"] = {str(kind): int(n) for kind, n in drift}

    def compare_now(self) -> tuple[list[tuple[str, str, str, str]], dict[str, Any]]:
        with self.db() as db:
            tasks = db.execute("SELECT kind, status, resource_id, coalesce(error, '') FROM tasks "
                               "WHERE kind IN ('instance.create', 'instance.delete')").fetchall()
            instances = db.execute("SELECT i.id, i.status, h.name FROM instances i "
                                   "LEFT JOIN hypervisors h ON h.id = i.hypervisor_id").fetchall()
            ports = db.execute(
                "SELECT p.ip_address, p.network_id, i.status, h.name, "
                "coalesce(array_agg(g.security_group_id ORDER BY g.security_group_id) "
                "FILTER (WHERE g.security_group_id IS NOT NULL), '{}') "
                "FROM ports p JOIN instances i ON i.id = p.instance_id JOIN hypervisors h ON h.id = i.hypervisor_id "
                "LEFT JOIN port_security_groups g ON g.port_id = p.id "
                "GROUP BY p.id, p.ip_address, p.network_id, i.status, h.name").fetchall()
        # Read while the hosts run: a line being written is left out, as its op has not answered yet.
        return tasks, compare(instances, ports, read_views(self.state_dir))

    def host_runs(self) -> dict[str, collections.Counter[tuple[str, str]]]:
        """op -> (host, instance id) -> runs, over every host's ops log."""
        runs: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(collections.Counter)
        for path in self.state_dir.glob("*.ops.log"):
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                runs[entry["op"]][(entry["host"], entry["id"])] += 1
        return runs


def task_outcomes(tasks: list[tuple[str, str, str, str]],
                  runs: dict[str, collections.Counter[tuple[str, str]]]) -> dict[str, Any]:
    """Succeeded, failed, lost (never ended, or a launch that succeeded without running on any host) and
    duplicated (run more than once on one host for one instance) per kind of task.  A launch that
    failed on a host is deleted there (its clean-up) and tried on another: that is not a duplicate.
    Nor is a delete run again: deletes are idempotent, run again when a backend's death cut them short,
    and sent again by the reconcile to a host that still holds a leftover (counted as ``reruns``)."""
    out: dict[str, Any] = {}
    for kind in ("instance.create", "instance.delete"):
        mine = [t for t in tasks if t[0] == kind]
        ran = collections.Counter(iid for _, iid in runs[kind])
        reruns = sum(n - 1 for n in runs[kind].values() if n > 1)
        out[kind] = {
            "tasks": len(mine),
            "succeeded": sum(t[1] == "succeeded" for t in mine),
            "failed": sum(t[1] == "failed" for t in mine),
            # A delete of an instance whose launch failed has no host to ask, and succeeds without a run.
            "lost": sum(t[1] in ("pending", "running")
                        or (kind == "instance.create" and t[1] == "succeeded" and ran[t[2]] == 0) for t in mine),
            "duplicated": 0 if kind == "instance.delete" else reruns,
            "failures": dict(collections.Counter(t[3][:120] for t in mine if t[1] == "failed").most_common(5)),
        }
        if kind == "instance.delete":
            out[kind]["reruns"] = reruns
    total = sum(v["tasks"] for v in out.values())
    ok = sum(v["succeeded"] for v in out.values())
    out["success_rate"] = round(ok / total, 6) if total else None
    return out


def compare(instances: list[tuple[str, str, str | None]], ports: list[tuple[str, str, str, str, list[str]]],
            views: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Orphans (on a host, not placed there by the database) and missing (active in the database
    on a host that lacks it), for instances and for ports; ports' security groups compared too."""
    placed = {(host, iid) for iid, _, host in instances if host is not None}
    active = {(host, iid) for iid, status, host in instances if host is not None and status == "active"}
    on_hosts = {(host, iid) for host, view in views.items() for iid in view["instances"]}
    db_ports = {(host, net, ip): sorted(groups) for ip, net, _, host, groups in ports}
    active_ports = {(host, net, ip) for ip, net, status, host, _ in ports if status == "active"}
    host_ports = {(host, net, ip): sorted(view["port_groups"].get(ip, []))
                  for host, v in views.items() for net, view in v["networks"].items() for ip in view["ports"]}
    orphans = sorted(on_hosts - placed)
    missing = sorted(active - on_hosts)
    port_orphans = sorted(set(host_ports) - set(db_ports))
    port_missing = sorted(active_ports - set(host_ports))
    groups_differ = sorted(k for k in set(host_ports) & set(db_ports) if host_ports[k] != db_ports[k])
    return {
        "db_instances": len(instances), "db_active": sum(s == "active" for _, s, _ in instances),
        "host_instances": len(on_hosts), "db_ports": len(db_ports), "host_ports": len(host_ports),
        "orphan_instances": len(orphans), "missing_instances": len(missing),
        "orphan_ports": len(port_orphans), "missing_ports": len(port_missing),
        "port_groups_differ": len(groups_differ),
        "disagreements": len(orphans) + len(missing) + len(port_orphans) + len(port_missing) + len(groups_differ),
        "examples": [list(x) for x in (orphans + missing)[:5]] + [list(x) for x in (port_orphans + port_missing)[:5]],
    }


# Output -----------------------------------------------------------------------------------------

_HEADLINE = ["hypervisors", "instances", "rate_per_s", "agents", "sim_procs", "startup_s", "load_s", "drain_s",
             "launches", "load_cut_short", "deletes", "launches_per_s", "launches_per_hypervisor_per_min", "api",
             "tasks", "agreement", "agreement_at_drain", "converged_after_s", "drift_events", "kills", "cpu_s",
             "cpu_s_per_launch", "db_per_launch", "at_rest", "peak_memory_mb", "wall_s", "error"]


def format_table(out: dict[str, Any]) -> str:
    keys = [k for k in _HEADLINE if k in out]
    width = max(len(k) for k in keys)
    lines = []
    for k in keys:
        value = out[k]
        if k == "kills":
            value = {"agents": sum(x["what"].startswith("agent-") for x in value),
                     "sims": sum(x["what"].startswith("sim-") for x in value),
                     "frontend": [x for x in value if x["what"] == "frontend"]}  # killed, or exited on its own
        if k == "api":
            value = {x: value[x] for x in ("calls", "p50_s", "p99_s", "max_s", "failed_attempts")}
        lines.append(f"{k:<{width}}  {json.dumps(value, separators=(',', ':'))}")
    return "\n".join(lines)


def verdict(out: dict[str, Any]) -> list[str]:
    """What makes the run a failure: an error, a task lost or run twice, or a disagreement."""
    bad = [out["error"]] if "error" in out else []
    for kind, counts in out.get("tasks", {}).items():
        if isinstance(counts, dict) and (counts["lost"] or counts["duplicated"]):
            bad.append(f"{kind}: {counts['lost']} lost, {counts['duplicated']} duplicated")
    agreement = out.get("agreement", {})
    for key in ("orphan_instances", "missing_instances", "orphan_ports", "missing_ports", "port_groups_differ"):
        if agreement.get(key):
            bad.append(f"{key}: {agreement[key]}")
    return bad


@click.command()
@click.option("--hypervisors", "hosts", type=click.IntRange(2), default=100, show_default=True,
              help="Simulated hypervisors.")
@click.option("--instances", type=click.IntRange(1), default=500, show_default=True, help="Launches in all.")
@click.option("--rate", type=click.FloatRange(0.1), default=5.0, show_default=True, help="Launches a second.")
@click.option("--clients", type=click.IntRange(1), default=4, show_default=True, help="Concurrent API clients.")
@click.option("--networks", type=click.IntRange(0), default=0, help="Tenant networks the ports are spread over "
              "[default: live / 10, at least 1].")
@click.option("--live", type=click.IntRange(0), default=0, help="Instances kept up: past it, each launch is "
              "followed by the oldest one's delete [default: hypervisors].")
@click.option("--chaos-seconds", "chaos_s", type=click.FloatRange(0.0), default=20.0, show_default=True,
              help="Mean seconds between kills of an agent or a host process (0: none, the reference).")
@click.option("--no-frontend-kill", "frontend_kill", is_flag=True, default=True, flag_value=False,
              help="Do not kill the frontend half way.")
@click.option("--fanout", type=click.IntRange(2), default=32, show_default=True)
@click.option("--sim-procs", type=click.IntRange(1), help="Processes the hosts are spread over "
              "[default: max(2, ceil(hypervisors/1000))].")
@click.option("--idle-seconds", "idle_s", type=click.FloatRange(1.0), default=10.0, show_default=True,
              help="Length of the at-rest measurement.")
@click.option("--seed", type=int, default=1, show_default=True, help="Of the kills' choice and timing.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Start no launch after this many minutes of load, and report what was done (a run that must "
                   "end by a given time).")
@click.option("--keep-run-dir", is_flag=True, help="Keep the run's directory (logs, the hosts' state) and say where.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Where to write the results [default: bench/results/soak-<hypervisors>-<instances>.json].")
def main(hosts: int, instances: int, rate: float, clients: int, networks: int, live: int, chaos_s: float,
         frontend_kill: bool, fanout: int, sim_procs: int | None, idle_s: float, seed: int, max_minutes: float | None,
         keep_run_dir: bool, json_path: str | None) -> None:
    """Launch and delete INSTANCES over HYPERVISORS simulated hosts while parts of the cloud crash."""
    live = live or hosts
    run_dir = Path(tempfile.mkdtemp(prefix="cloudland-soak-"))
    try:
        cfg = Config(hosts, int(frontend_kill), 1, fanout, sim_procs or max(2, math.ceil(hosts / 1000)), idle_s,
                     run_dir, instances=instances, rate=rate, clients=clients, networks=networks or max(1, live // 10),
                     live=live, chaos_s=chaos_s, seed=seed, max_load_s=max_minutes * 60 if max_minutes else None)
        setup_logging("warning", service="bench", stream=open(run_dir / "bench.log", "a", buffering=1))  # noqa: SIM115
        out = SoakBench(cfg).run()
    finally:
        if keep_run_dir:
            click.echo(f"the run's directory: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    path = Path(json_path) if json_path else RESULTS_DIR / f"soak-{hosts}-{instances}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    click.echo(format_table(out))
    click.echo(f"\nwritten to {path}")
    bad = verdict(out)
    if bad:
        click.echo("FAILED: " + "; ".join(bad))
        sys.exit(1)


if __name__ == "__main__":
    main()
