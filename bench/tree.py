"""Build a real tree on loopback and measure it: ``python -m bench.tree --hosts N``.

Phases, in order, on one machine:

1. flat star: the physical reference (one ROUTER here, one DEALER per host);
2. tree start-up: the root in this process, agents level by level, then the backends;
3. idle: what the tree at rest costs in CPU (heartbeats, timers);
4. broadcast rounds: a ``ping`` to every host, gathered in full, one after the other;
5. unicast: pings to random single hosts, many in flight;
6. scrape: one ``/metrics`` of a real frontend over this tree (``bench/scrape.py``);
7. failover: kill -9 an agent with backends under it while broadcasts run;
   rebalance: start it again and time until no parent carries more than the fan-out (the
   root moving the orphans back from their fallbacks);
8. audit: every process's log for nodes declared dead that were alive;
9. teardown: the simulated backends report how often each command ran on each host.

``--background-load K`` runs K processes that spin on a core each from before the flat star to
the end, so every phase runs on a machine the tree has to share: slower, but never wrong (no
false failures, nothing lost or run twice).  Their CPU is left out of the tree's figures.

``--reference counters-off`` then builds the same tree again with every node's counting off
and measures idle and broadcasts there too, so the cost of the metrics stands beside the
figures in the same run.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import zmq

import sci
from service.logs import setup_logging

from . import phases
from .flat import FlatStar, run_flat
from .procs import Fleet, MemorySampler, burn, cpu_seconds, peak_rss_mb, run_pids
from .simhosts import run_agent, run_sim

RESULTS_DIR = Path(__file__).parent / "results"
#: Most hosts joining at once over the whole run (see simhosts._PacedStart).
JOIN_WINDOW = 64
#: Files the bench process holds besides the flat star's connections (logs, pipes, sockets).
_FLAT_FD_MARGIN = 500
#: Broadcasts before the measured rounds, so that those do not pay for first-use costs.
WARMUP_ROUNDS = 2
UNICAST_SECONDS = 5.0
UNICAST_IN_FLIGHT = 200
#: The tree at rest: a pause for start-up traffic to die down, then the measured quiet.
IDLE_SETTLE_S = 1.0
IDLE_SECONDS = 3.0
#: Longest wait for the tree to be back under the fan-out after the killed agent returns.
REBALANCE_TIMEOUT_S = 120.0
POLL_S = 0.05


@dataclass(frozen=True)
class Config:
    hosts: int
    agents: int
    fanout: int
    rounds: int
    sim_procs: int
    process_per_host: bool
    settings: sci.TreeSettings
    run_dir: Path
    #: CURVE on every link, every node's key enrolled beforehand (as the product runs)
    curve: bool = True
    #: processes spinning on a core each beside the tree for the whole run
    background_load: int = 0
    #: how long the tree is watched at rest: the longer, the steadier the figure
    idle_seconds: float = IDLE_SECONDS

    @property
    def mode(self) -> str:
        return "process-per-host" if self.process_per_host else "sim-procs"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def host_names(self) -> list[str]:
        return [f"h{i:05d}" for i in range(self.hosts)]

    def host_groups(self) -> list[list[str]]:
        """The hosts of each sim process: contiguous, as even as possible."""
        names = self.host_names
        size = math.ceil(len(names) / self.sim_procs)
        return [names[i:i + size] for i in range(0, len(names), size)]


def default_agents(hosts: int, fanout: int) -> int:
    """Enough relays that no node needs more than ``fanout`` children."""
    level = math.ceil(hosts / fanout)
    total = level
    while level > fanout:
        level = math.ceil(level / fanout)
        total += level
    return total


class TreeBench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.keys = BenchKeys([*(f"agent-{i:03d}" for i in range(cfg.agents)), *cfg.host_names]) if cfg.curve else None
        self.fleet = Fleet()
        self.root: sci.TreeRoot | None = None
        self.agents = [f"agent-{i:03d}" for i in range(cfg.agents)]
        self.sims: list[str] = []
        self.victim: str | None = None
        self.out: dict[str, Any] = {
            "hosts": cfg.hosts, "agents": cfg.agents, "fanout": cfg.fanout, "sim_procs": cfg.sim_procs,
            "mode": cfg.mode, "rounds": cfg.rounds, "curve": cfg.curve,
            "heartbeat_interval_s": cfg.settings.heartbeat_interval,
            "heartbeat_misses": cfg.settings.heartbeat_misses,
            "link_heartbeat_interval_s": cfg.settings.link_heartbeat_interval,
            "link_timeout_s": cfg.settings.link_timeout, "background_load": cfg.background_load,
            "idle_seconds": cfg.idle_seconds,
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "kernel": platform.release(),
            "sci_version": _sci_version(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        }

    def run(self, full: bool = True) -> dict[str, Any]:
        """Every phase; with ``full`` false (a reference run) only start-up, idle and broadcasts."""
        started = time.monotonic()
        memory = MemorySampler().start()
        try:
            for i in range(self.cfg.background_load):
                self.fleet.spawn(f"burn-{i}", burn)
            try:
                if full:
                    self.flat_star()
                self.root = sci.TreeRoot("tcp://127.0.0.1:0", self.cfg.settings,
                                         security=self.keys.root_security() if self.keys else None).start()
                self.start_tree()
                if full:
                    self.measure()
                else:
                    pids = run_pids()
                    self.measure_idle(pids)
                    self.measure_broadcasts(pids)
            except Exception as exc:  # noqa: BLE001 - still audit and report what was measured up to here
                traceback.print_exc()
                self.out["error"] = f"{type(exc).__name__}: {exc}"
            self.audit()
            self.teardown()
        finally:
            self.fleet.stop(grace=5.0)
            if self.root is not None:
                self.root.stop()
            memory.stop()
        self.out["mem_peak_mb"] = round(memory.peak_mb, 1)
        self.out["wall_s"] = round(time.monotonic() - started, 1)
        return self.out

    # Flat star ----------------------------------------------------------------------------

    def flat_star(self) -> None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the star raises itself to it
        if self.cfg.hosts + _FLAT_FD_MARGIN > limit:
            # One process cannot hold a connection to every host: no flat reference at this size.
            self.out["flat_skipped"] = f"{self.cfg.hosts} connections to one process exceed its {limit} open files"
            return
        star = FlatStar(self.cfg.host_names)
        names = []
        try:
            for i, group in enumerate(self.cfg.host_groups()):
                names.append(f"flat-{i}")
                self.fleet.spawn(names[-1], run_flat, group, star.endpoint)
            star.wait_ready(120 + self.cfg.hosts / 50, self.fleet.check)
            times, missing = [], 0
            for k in range(WARMUP_ROUNDS + self.cfg.rounds):
                seconds, lost = star.round(k)
                if k >= WARMUP_ROUNDS:
                    times.append(seconds)
                    missing += lost
        finally:
            self.fleet.stop(names)
            star.close()
        self.out.update(flat_p50_s=_pct(times, 50), flat_p99_s=_pct(times, 99), flat_lost=missing)

    # Start-up -----------------------------------------------------------------------------

    def start_tree(self) -> None:
        (self.cfg.run_dir / "reports").mkdir(exist_ok=True)
        started = time.monotonic()
        before = cpu_seconds(run_pids())
        self.start_agents()
        self.out["agents_up_s"] = round(time.monotonic() - started, 2)
        agents_up = cpu_seconds(run_pids())
        self.start_backends()
        self.out["startup_s"] = round(time.monotonic() - started, 2)
        # Where start-up goes: the agents' own joins, then the hosts' (by role: root, agents, sims).
        self.out["startup_cpu_s_by_role"] = {
            "agents_joining": _rounded(self._cpu_by_role(before, agents_up, born=True)),
            "hosts_joining": _rounded(self._cpu_by_role(agents_up, cpu_seconds(run_pids()), born=True)),
        }

    def start_agents(self) -> None:
        """Level by level: the planner can only place an agent under agents already attached."""
        assert self.root is not None
        fanout = self.cfg.fanout
        started = 0
        while started < len(self.agents):
            # All started agents are attached by now: the root's slots plus theirs, less their own.
            room = fanout * (1 + started) - started
            for name in self.agents[started:started + room]:
                self.fleet.spawn(name, run_agent, name, self.root.endpoint, self.cfg.settings,
                                 str(self.cfg.log_dir / f"{name}.log"), *self._keys_for([name], one=True))
            started = min(len(self.agents), started + room)
            self._wait_agents(started, timeout=60 + started / 5)

    def _wait_agents(self, count: int, timeout: float) -> None:
        assert self.root is not None
        end = time.monotonic() + timeout
        while sum(n.role == "agent" and n.up for n in self.root.nodes()) < count:
            self.fleet.check()
            if time.monotonic() > end:
                raise TimeoutError(f"agents did not attach in {timeout:.0f}s")
            time.sleep(POLL_S)

    def _wait_hosts(self, count: int, timeout: float) -> None:
        assert self.root is not None
        end = time.monotonic() + timeout
        while True:
            self.fleet.check()
            try:
                self.root.wait_for_hosts(count, timeout=min(1.0, max(0.0, end - time.monotonic())))
                return
            except TimeoutError:
                if time.monotonic() >= end:
                    raise

    def start_backends(self) -> None:
        """Start the sim processes; keep the hosts joining at once under JOIN_WINDOW."""
        assert self.root is not None
        groups = self.cfg.host_groups()
        window = max(1, JOIN_WINDOW // len(groups))
        total = list(itertools.accumulate(len(g) for g in groups))
        wait_budget = 120 + self.cfg.hosts / 20
        for i, group in enumerate(groups):
            if i >= JOIN_WINDOW:
                # More processes than the window: the one JOIN_WINDOW back must be in first.
                self._wait_hosts(total[i - JOIN_WINDOW], wait_budget)
            name = f"sim-{i}"
            self.fleet.spawn(name, run_sim, group, self.root.endpoint, self.cfg.settings,
                             str(self.cfg.log_dir / f"{name}.log"), self._report_path(name), window,
                             *self._keys_for(group))
            self.sims.append(name)
        self._wait_hosts(self.cfg.hosts, wait_budget)

    def _keys_for(self, nodes: list[str], one: bool = False) -> tuple[Any, str | None]:
        """The CURVE key pairs a child process's nodes use, and the root's public key."""
        if self.keys is None:
            return None, None
        pairs = {n: self.keys.pairs[n] for n in nodes}
        return (pairs[nodes[0]] if one else pairs), self.keys.root.public

    def _report_path(self, sim: str) -> str:
        return str(self.cfg.run_dir / "reports" / f"{sim}.json")

    # Measurements -------------------------------------------------------------------------

    def measure(self) -> None:
        pids = run_pids()
        self.measure_idle(pids)
        plain = self.measure_broadcasts(pids)
        self.measure_unicast()
        self.measure_scrape()
        recovery, orphans = self.measure_failover()
        self.measure_rebalance()
        assert self.root is not None
        final = phases.broadcast(self.root, "final")
        self.out["final_ok"] = self.cfg.hosts - len(final.failed)
        self._losses([*plain, final], recovery, orphans)
        self.out["replays"] = self.root.stats.replays
        self.out["duplicates_dropped_at_root"] = self.root.stats.duplicates_dropped

    def measure_broadcasts(self, pids: list[int]) -> list[phases.Round]:
        """Warm-up and measured rounds, back to back; returns them all for the loss count."""
        assert self.root is not None
        warmup = [phases.broadcast(self.root, f"w{k}") for k in range(WARMUP_ROUNDS)]
        before = cpu_seconds(pids)
        rounds = [phases.broadcast(self.root, f"b{k}") for k in range(self.cfg.rounds)]
        spent = self._cpu_by_role(before, cpu_seconds(pids))
        times = [r.seconds for r in rounds]
        self.out.update(
            bcast_p50_s=_pct(times, 50), bcast_p99_s=_pct(times, 99), bcast_max_s=round(max(times), 4),
            bcast_rounds_s=[round(t, 3) for t in times],
            cpu_s_per_round=round(sum(spent.values()) / self.cfg.rounds, 4),
            cpu_s_per_round_by_role={k: round(v / self.cfg.rounds, 4) for k, v in spent.items()},
        )
        return [*warmup, *rounds]

    def measure_unicast(self) -> None:
        assert self.root is not None
        uni = phases.unicast(self.root, self.cfg.host_names, UNICAST_SECONDS, UNICAST_IN_FLIGHT)
        self.out.update(unicast_per_s=round(uni.per_s), unicast_sent=uni.sent, unicast_failed=uni.failed,
                        unicast_p50_s=_pct(uni.latencies, 50), unicast_p99_s=_pct(uni.latencies, 99))

    def measure_scrape(self) -> None:
        # Imported here, not at the top: every agent and sim process re-imports this module
        # (multiprocessing's forkserver runs the parent's __main__ again), and the frontend's
        # web and database stack would cost each of hundreds of processes ~100 MB and a second.
        from .scrape import measure_scrape

        assert self.root is not None
        scrape = measure_scrape(self.root, self.cfg.host_names)
        self.out.update(scrape_p50_s=_pct(scrape.seconds, 50), scrape_max_s=round(max(scrape.seconds), 4),
                        scrape_cpu_s=round(scrape.cpu_s, 4), scrape_bytes=scrape.bytes, scrape_series=scrape.series,
                        status_query_p50_s=_pct(scrape.status_seconds, 50))

    def measure_failover(self) -> tuple[phases.Recovery, set[str]]:
        assert self.root is not None
        self.victim, orphans = phases.choose_victim(self.root)
        recovery = phases.recover(self.root, self.fleet, self.victim, orphans)
        self.out.update(
            recover_s=None if recovery.back_at is None else round(recovery.back_at - recovery.killed_at, 3),
            killed=self.victim, orphans=len(orphans), probes_failed=recovery.probes_failed,
            kill_phase_rounds=len(recovery.rounds),
            kill_phase_bcast_max_s=round(max((r.seconds for r in recovery.rounds), default=0.0), 4),
        )
        return recovery, set(orphans)

    def measure_rebalance(self) -> None:
        """Start the killed agent again: how long until no parent carries more than the fan-out
        (its orphans moved back from their fallbacks by the root), and how many hosts moved."""
        root, victim, fanout = self.root, self.victim, self.cfg.fanout
        assert root is not None and victim is not None

        def crowded() -> int:
            load = collections.Counter(n.parent for n in root.nodes() if n.up and n.parent is not None)
            return sum(1 for count in load.values() if count > fanout)

        self.out["crowded_after_failover"] = crowded()
        moves = root.stats.moves
        started = time.monotonic()
        self.fleet.spawn(victim, run_agent, victim, root.endpoint, self.cfg.settings,
                         str(self.cfg.log_dir / f"{victim}.log"), *self._keys_for([victim], one=True))
        end = started + REBALANCE_TIMEOUT_S
        while crowded() and time.monotonic() < end:
            time.sleep(POLL_S)
        self.out["rebalance_s"] = None if crowded() else round(time.monotonic() - started, 3)
        self.out["hosts_moved"] = root.stats.moves - moves

    def measure_idle(self, pids: list[int]) -> None:
        """What the tree costs at rest (heartbeats, timers): the floor every measurement stands on."""
        time.sleep(IDLE_SETTLE_S)  # start-up traffic (route batches) dies down
        before = cpu_seconds(pids)
        seconds = self.cfg.idle_seconds
        time.sleep(seconds)
        spent = self._cpu_by_role(before, cpu_seconds(pids))
        self.out["idle_cpu_cores"] = round(sum(spent.values()) / seconds, 3)
        self.out["idle_cpu_cores_by_role"] = {k: round(v / seconds, 3) for k, v in spent.items()}

    def _cpu_by_role(self, before: dict[int, float], after: dict[int, float], born: bool = False) -> dict[str, float]:
        """CPU seconds spent between two snapshots, summed by role (bench = root and bench threads).

        The background load is no part of the tree: its processes are left out.  ``born``: count
        processes started between the snapshots from zero (else they are left out).
        """
        role = {self.fleet.pid(n): n.split("-")[0] for n in self.fleet.procs}
        role[os.getpid()] = "bench"
        spent: dict[str, float] = {}
        for pid, cpu in after.items():
            name = role.get(pid, "other")
            if (born or pid in before) and name != "burn":
                spent[name] = spent.get(name, 0.0) + cpu - before.get(pid, 0.0)
        return dict(sorted(spent.items()))

    def _losses(self, plain: list[phases.Round], recovery: phases.Recovery, orphans: set[str]) -> None:
        """Non-OK answers in broadcasts; the orphans' in rounds that overlapped the kill are excused."""
        window_end = recovery.back_at if recovery.back_at is not None else math.inf
        lost = sum(len(r.failed) for r in plain)
        excused = 0
        for r in recovery.rounds:
            overlaps = r.submitted < window_end and r.submitted + r.seconds > recovery.killed_at
            for host in r.failed:
                if overlaps and host in orphans:
                    excused += 1
                else:
                    lost += 1
        self.out["lost"] = lost
        self.out["lost_in_kill_window"] = excused
        self.out["delivered_twice"] = sum(r.delivered_twice for r in [*plain, *recovery.rounds])

    # Audit and teardown -------------------------------------------------------------------

    def audit(self) -> None:
        """Read the logs and memory high-water marks while everything still runs (teardown adds noise)."""
        self.out.update(phases.audit_logs(self.cfg.log_dir, self.victim))
        self.out["crashed"] = self.fleet.crashed()
        self.out["rss_peak_bench_mb"] = round(peak_rss_mb(os.getpid()), 1)
        for kind, names in (("agent", self.agents), ("sim", self.sims)):
            peaks = [peak_rss_mb(self.fleet.pid(n)) for n in names if n in self.fleet.procs and n != self.victim]
            self.out[f"rss_peak_{kind}_max_mb"] = round(max(peaks, default=0.0), 1)
            self.out[f"rss_peak_{kind}_sum_mb"] = round(sum(peaks), 1)

    def teardown(self) -> None:
        """Stop the backends first, so that each writes how often it ran each command."""
        self.fleet.stop(self.sims)
        executions = duplicated = missing = 0
        for sim in self.sims:
            path = Path(self._report_path(sim))
            if not path.exists():
                missing += 1
                continue
            report = json.loads(path.read_text())
            executions += report["executions"]
            duplicated += report["duplicated"]
        self.out["executions"] = executions
        self.out["duplicated"] = duplicated + self.out.get("delivered_twice", 0)
        self.out["sim_reports_missing"] = missing


def _sci_version() -> str:
    """The commit the run measured, marked dirty if sci/ had changes not committed."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--", "sci") else "")


def _rounded(spent: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in spent.items()}


def _pct(values: list[float], pct: int) -> float | None:
    """Nearest-rank percentile: with 30 rounds, p99 is the slowest round."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return round(ordered[rank - 1], 4)


# Output -------------------------------------------------------------------------------------

_HEADLINE = ["hosts", "mode", "agents", "fanout", "sim_procs", "rounds", "startup_s", "bcast_p50_s", "bcast_p99_s",
             "flat_p50_s", "unicast_per_s", "recover_s", "rebalance_s", "false_failures", "lost", "duplicated", "cpu_s_per_round",
             "idle_cpu_cores", "scrape_p50_s", "status_query_p50_s", "mem_peak_mb", "wall_s"]
#: What a reference run reports beside the main run's figures.
_REFERENCE_KEYS = ["bcast_p50_s", "bcast_p99_s", "cpu_s_per_round", "cpu_s_per_round_by_role", "idle_cpu_cores",
                   "startup_s", "error"]
#: What a reference run changes.
REFERENCES: dict[str, Callable[[Config], Config]] = {
    "counters-off": lambda cfg: dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings,
                                                                                     counters_interval=0.0)),
    "curve-off": lambda cfg: dataclasses.replace(cfg, curve=False),
}


class BenchKeys:
    """A CURVE key pair per node, all enrolled at the root before the tree starts, with the
    route-signing keys derived from them (as if every node had joined once before)."""

    def __init__(self, nodes: list[str]) -> None:
        self.root = sci.KeyPair.generate()
        self.pairs = {}
        for node in nodes:
            pair = sci.KeyPair.generate()
            self.pairs[node] = (pair.public, pair.secret)

    def root_security(self) -> sci.Security:
        return sci.Security(self.root, self.root.public,
                            sci.Keyring({node: pair[0] for node, pair in self.pairs.items()},
                                        signers={node: sci.ClaimSigner(pair[1]).public
                                                 for node, pair in self.pairs.items()}))


def format_table(out: dict[str, Any]) -> str:
    keys = _HEADLINE + [k for k in out if k not in _HEADLINE]
    width = max(len(k) for k in keys)
    return "\n".join(f"{k:<{width}}  {_show(out.get(k))}" for k in keys)


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


_DEFAULTS = sci.TreeSettings()


@click.command()
@click.option("--hosts", type=click.IntRange(1), required=True, help="Simulated backends.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Where to write the results "
              "[default: bench/results/tree-<hosts>.json].")
@click.option("--agents", type=click.IntRange(1), help="Relay processes [default: enough for the fan-out].")
@click.option("--fanout", type=click.IntRange(2), default=32, show_default=True)
@click.option("--rounds", type=click.IntRange(20), default=30, show_default=True, help="Measured broadcasts.")
@click.option("--sim-procs", type=click.IntRange(1), help="Processes the hosts are spread over "
              "[default: max(2, ceil(hosts/2500))].")
@click.option("--process-per-host", is_flag=True, help="Every backend its own process.")
@click.option("--heartbeat-interval", type=float, default=_DEFAULTS.heartbeat_interval, show_default=True)
@click.option("--heartbeat-misses", type=int, default=_DEFAULTS.heartbeat_misses, show_default=True)
@click.option("--link-heartbeat-interval", type=float, default=_DEFAULTS.link_heartbeat_interval, show_default=True,
              help="Seconds between ZMTP PINGs on every connection.")
@click.option("--link-timeout", type=float, default=_DEFAULTS.link_timeout, show_default=True,
              help="Seconds a connection may stay silent after a PING before libzmq drops it.")
@click.option("--counters-interval", type=float, default=_DEFAULTS.counters_interval, show_default=True,
              help="Seconds between leaves' counter reports; 0 turns counting off.")
@click.option("--curve/--no-curve", default=True, show_default=True,
              help="CURVE encryption and authentication on every link, as the product runs.")
@click.option("--background-load", type=click.IntRange(0), default=0, show_default=True,
              help="Processes spinning on a core each beside the tree for the whole run.")
@click.option("--idle-seconds", type=click.FloatRange(1.0), default=IDLE_SECONDS, show_default=True,
              help="How long the tree is watched at rest for idle_cpu_cores.")
@click.option("--reference", "references", type=click.Choice(sorted(REFERENCES)), multiple=True,
              help="Also build the tree with this change and measure idle and broadcasts on it.")
def main(hosts: int, json_path: str | None, agents: int | None, fanout: int, rounds: int, sim_procs: int | None,
         process_per_host: bool, heartbeat_interval: float, heartbeat_misses: int, link_heartbeat_interval: float,
         link_timeout: float, counters_interval: float, curve: bool, background_load: int, idle_seconds: float,
         references: tuple[str, ...]) -> None:
    """Build a tree of HOSTS simulated backends on loopback and measure it."""
    settings = sci.TreeSettings(fanout=fanout, heartbeat_interval=heartbeat_interval,
                                heartbeat_misses=heartbeat_misses, link_heartbeat_interval=link_heartbeat_interval,
                                link_timeout=link_timeout, counters_interval=counters_interval).validate()
    procs = hosts if process_per_host else min(hosts, sim_procs or max(2, math.ceil(hosts / 2500)))
    run_dir = RESULTS_DIR / f"run-{hosts}{'-pph' if process_per_host else ''}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cfg = Config(hosts, agents or default_agents(hosts, fanout), fanout, rounds, procs, process_per_host,
                 settings, run_dir, curve, background_load, idle_seconds)
    cfg.log_dir.mkdir()
    # The root runs here: its warnings (children declared dead) go where the audit reads them.
    log = open(cfg.log_dir / "bench.log", "a", buffering=1)  # noqa: SIM115 - open for the whole run
    setup_logging("warning", service="bench", stream=log)
    out = TreeBench(cfg).run()
    out["counters_interval_s"] = settings.counters_interval
    for name in references if "error" not in out else ():
        ref_dir = run_dir.with_name(f"{run_dir.name}-{name}")
        shutil.rmtree(ref_dir, ignore_errors=True)
        (ref_dir / "logs").mkdir(parents=True)
        ref_cfg = dataclasses.replace(REFERENCES[name](cfg), run_dir=ref_dir)
        ref = TreeBench(ref_cfg).run(full=False)
        out[f"reference_{name.replace('-', '_')}"] = {k: ref[k] for k in _REFERENCE_KEYS if k in ref}
    path = Path(json_path) if json_path else RESULTS_DIR / f"tree-{hosts}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    click.echo(format_table(out))
    click.echo(f"\nwritten to {path}")
    if "error" in out:
        sys.exit(1)


if __name__ == "__main__":
    main()
