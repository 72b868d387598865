"""The frontend's Prometheus metrics, served at ``/metrics``.

Counters and histograms are moved where things happen (API requests by the app's middleware,
commands when their last host answers).  What is a state rather than an event (tasks by
status, hosts up and down, capacity per zone, heartbeat ages) is read when Prometheus
scrapes, by ``StateCollector``, so it can never drift from the database and the tree.
Each frontend has its own registry: several in one process (the tests) do not mix.
"""

from __future__ import annotations

import time
from typing import Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from sci import CommandHandle, TreeRoot
from service.config import SchedulerSection
from service.counter_metrics import counter_families

from .db import Database
from .db.models import Hypervisor, Task, Zone
from .hosts import TREE_VIEW_MAX_AGE_S
from .tasks import TaskEngine

__all__ = ["Metrics", "StateCollector"]

log = structlog.get_logger("frontend.metrics")

#: seconds: API calls are milliseconds; a broadcast to 10,000 hosts is under a second; launches take minutes
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)
HEARTBEAT_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
#: seconds: a renewal is one statement; past a second it eats into the lease's margin
RENEW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.api_requests = Counter("cloudland_api_requests", "API requests by route and status",
                                    ["method", "route", "status"], registry=self.registry)
        self.api_seconds = Histogram("cloudland_api_request_seconds", "API request latency", ["method", "route"],
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.commands = Counter("cloudland_commands", "Commands sent through the tree, by op and outcome "
                                "(ok: every host answered ok)", ["op", "outcome"], registry=self.registry)
        self.command_seconds = Histogram("cloudland_command_seconds",
                                         "Command latency, from submit to the last host's result",
                                         ["op"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.host_results = Counter("cloudland_command_host_results", "Per-host results of commands",
                                    ["op", "status"], registry=self.registry)
        self.leader = Gauge("cloudland_frontend_leader", "1 while this frontend leads (runs the tree's root, "
                            "the tasks and the monitors)", registry=self.registry)
        self.lease_renew_seconds = Histogram("cloudland_frontend_lease_renew_seconds",
                                             "Latency of the leadership lease's renewals (PostgreSQL)",
                                             buckets=RENEW_BUCKETS, registry=self.registry)
        self.takeovers = Counter("cloudland_frontend_takeovers", "Times this frontend began to lead",
                                 registry=self.registry)

    def watch(self, handle: CommandHandle) -> CommandHandle:
        """Count ``handle``'s command and its hosts' results once it ends (in the tree's thread: cheap)."""

        def done(finished: CommandHandle) -> None:
            statuses = [r.status.name.lower() for r in finished.wait(0).values()]
            for status in statuses:
                self.host_results.labels(finished.op, status).inc()
            outcome = "ok" if all(s == "ok" for s in statuses) else "failed"
            self.commands.labels(finished.op, outcome).inc()
            self.command_seconds.labels(finished.op).observe(time.monotonic() - finished.submitted)

        handle.add_done_callback(done)
        return handle

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.api_requests.labels(method, route, str(status)).inc()
        self.api_seconds.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StateCollector(Collector):
    """Gauges read at scrape time from the database and the tree."""

    def __init__(self, db: Database, ratios: SchedulerSection, tasks: TaskEngine, tree: TreeRoot | None) -> None:
        self.db = db
        self.ratios = ratios
        self.tasks = tasks
        self.tree = tree

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._from_database()
        except Exception:  # a scrape while the database is away still reports the rest
            log.warning("metrics_database_unavailable", exc_info=True)
        yield from self._from_tree()
        running = GaugeMetricFamily("cloudland_tasks_in_flight", "Tasks this frontend is running now")
        running.add_metric([], self.tasks.in_flight)
        yield running
        parked = GaugeMetricFamily("cloudland_tasks_parked", "Tasks waiting for hypervisors that are away")
        parked.add_metric([], self.tasks.parked)
        yield parked

    def _from_database(self) -> Iterator[Metric]:
        ratios = self.ratios
        with self.db.read() as session:
            tasks = session.execute(select(Task.status, func.count()).group_by(Task.status)).all()
            hosts = session.execute(select(Hypervisor.status, func.count()).group_by(Hypervisor.status)).all()
            zones = session.execute(
                select(func.coalesce(Zone.name, ""), func.sum(Hypervisor.vcpus), func.sum(Hypervisor.vcpus_used),
                       func.sum(Hypervisor.memory_mb), func.sum(Hypervisor.memory_mb_used),
                       func.sum(Hypervisor.disk_gb), func.sum(Hypervisor.disk_gb_used))
                .outerjoin(Zone, Zone.id == Hypervisor.zone_id)
                .where(Hypervisor.status == "up", Hypervisor.enabled.is_(True))
                .group_by(Zone.name)).all()
        by_status = GaugeMetricFamily("cloudland_tasks", "Tasks by status", labels=["status"])
        for status, count in tasks:
            by_status.add_metric([status], count)
        yield by_status
        up_down = GaugeMetricFamily("cloudland_hypervisors", "Hypervisors by state", labels=["status"])
        for status in ("up", "down"):
            up_down.add_metric([status], dict(hosts).get(status, 0))
        yield up_down
        capacity = GaugeMetricFamily("cloudland_capacity", "Schedulable capacity of up, enabled hypervisors "
                                     "(total after overcommit, and used)", labels=["zone", "resource", "kind"])
        for zone, vcpus, vcpus_used, mem, mem_used, disk, disk_used in zones:
            for resource, total, used, ratio in (("vcpus", vcpus, vcpus_used, ratios.cpu_allocation_ratio),
                                                 ("memory_mb", mem, mem_used, ratios.ram_allocation_ratio),
                                                 ("disk_gb", disk, disk_used, ratios.disk_allocation_ratio)):
                capacity.add_metric([zone, resource, "total"], float(total or 0) * ratio)
                capacity.add_metric([zone, resource, "used"], float(used or 0))
        yield capacity

    def _from_tree(self) -> Iterator[Metric]:
        tree = self.tree
        if tree is None or not tree.running:
            return  # a standby: the leader's scrape has the tree
        stats = tree.stats
        for name, value, help_ in (("commands", stats.commands, "Commands the root sent"),
                                   ("replays", stats.replays, "Command waves re-sent after a route changed"),
                                   ("duplicates_dropped", stats.duplicates_dropped, "Duplicate results dropped"),
                                   ("late_results", stats.late_results, "Results that came after their deadline"),
                                   ("joins", stats.joins, "Nodes that joined the tree"),
                                   ("root_reparents", stats.reparents, "Nodes the root saw attach under another "
                                                                       "parent")):
            counter = CounterMetricFamily(f"cloudland_tree_{name}", help_)
            counter.add_metric([], value)
            yield counter
        in_flight = GaugeMetricFamily("cloudland_tree_commands_in_flight",
                                      "Commands the root is waiting on (its queue)")
        in_flight.add_metric([], tree.commands_in_flight)
        yield in_flight
        try:
            report = tree.tree_report(timeout=2.0, max_age=TREE_VIEW_MAX_AGE_S)
        except TimeoutError:
            return
        # Per relay: what it counted itself (scope=self) and what the hypervisors attached to it
        # reported (scope=leaves).  Cluster totals are sum() over both labels.
        yield from counter_families(
            [row for c in report.counters for row in (([c.node_id, "self"], c.counters),
                                                      ([c.node_id, "leaves"], c.leaves))],
            labels=("node", "scope"))
        nodes = report.nodes
        ages = sorted(n.heartbeat_age for n in nodes if n.role == "backend" and n.heartbeat_age is not None)
        buckets, total = [], 0
        for bound in HEARTBEAT_BUCKETS:
            total = sum(1 for a in ages if a <= bound)
            buckets.append((str(bound), total))
        buckets.append(("+Inf", len(ages)))
        heartbeat = HistogramMetricFamily("cloudland_heartbeat_age_seconds",
                                          "Seconds since each host's parent last heard from it")
        heartbeat.add_metric([], buckets, sum_value=sum(ages))
        yield heartbeat
        states = GaugeMetricFamily("cloudland_tree_nodes", "Tree nodes by role and state", labels=["role", "state"])
        counts: dict[tuple[str, str], int] = {}
        for node in nodes:
            counts[(node.role, node.state)] = counts.get((node.role, node.state), 0) + 1
        for (role, state), count in sorted(counts.items()):
            states.add_metric([role, state], count)
        yield states
