"""``make run``: bring up a local cloud on the embedded defaults and keep it until Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import psutil

from . import LocalCluster, demo, guest, libvirtd, purge

#: how etc/systemd's units have a daemon restarted: Restart=on-failure (not after a clean stop: an
#: exit status 0, or one of the signals systemd counts as clean), RestartSec=1, and
#: RestartPreventExitStatus=2 (a bad config or a start-up error, which a restart cannot fix)
CLEAN_STATUSES = {0, -signal.SIGHUP, -signal.SIGINT, -signal.SIGTERM, -signal.SIGPIPE}
RESTART_DELAY_S = 1.0
NO_RESTART_STATUS = 2
#: The units restart a crash loop forever (StartLimitIntervalSec=0): on a host someone reads the
#: journal meanwhile.  Here the loop would only scroll by in the one terminal an operator watches,
#: so make run gives up on a daemon that failed this many times in a row, each time within
#: QUICK_FAILURE_S of its start, and shows why.
CRASH_LOOP = 5
QUICK_FAILURE_S = 10.0
#: lines of a daemon's log shown when make run gives up on it
LOG_TAIL = 10
POLL_S = 0.2


@click.command()
@click.option("--agents", default=2, show_default=True, help="Relay processes.")
@click.option("--backends", default=3, show_default=True, help="Backend processes (hypervisors).")
@click.option("--frontends", default=1, show_default=True, type=click.IntRange(1, 9),
              help="Frontends: above 1, standbys that take over from the leader, on a PostgreSQL server "
                   "this command starts (docs/ha.md).")
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="Where configs, logs, the database and journals go [default: .run; with standby "
                   "frontends .run-ha, emptied at each start since their database is new each time].")
@click.option("--api-port", default=8080, show_default=True,
              help="Where the REST API listens (127.0.0.1, or the management address).")
@click.option("--compute/--no-compute", default=None,
              help="Run real guests with libvirt on this machine (default: when running as root with libvirt).")
@click.option("--netns-hypervisors/--no-netns-hypervisors", default=None,
              help="Run each backend in a network namespace of its own with the network driver, so guests "
                   "get tenant networks; the frontend and agents listen on the namespaces' management address "
                   "instead of loopback (default: with compute).")
def main(agents: int, backends: int, frontends: int, workdir: str | None, api_port: int, compute: bool | None,
         netns_hypervisors: bool | None) -> None:
    """Start FRONTENDS frontends, AGENTS relays and BACKENDS backends on loopback."""
    if netns_hypervisors and os.geteuid() != 0:
        raise click.UsageError("--netns-hypervisors needs root (network namespaces)")
    if compute is None:
        compute = os.geteuid() == 0 and libvirtd.qemu_available()
    if netns_hypervisors is None:
        netns_hypervisors = compute
    options: dict[str, Any] = {"ops_modules": []}
    if compute:
        # Every backend shares this machine's libvirtd; each keeps its own pool and domains.
        options = {"ops_modules": ["backend.compute"],
                   "backend_config": {"compute": {"domain_type": "auto", "cmdline": guest.CMDLINE}}}
    if netns_hypervisors:
        options["ops_modules"].append("backend.network")
    options.setdefault("backend_config", {})["capacity"] = _share_of_this_machine(backends)
    if workdir is None and frontends > 1:
        # Nodes enrolled with a database that died with the last run would be refused.
        workdir = ".run-ha"
        purge.main([workdir])  # the namespaces and guests of a run that was killed
        shutil.rmtree(workdir, ignore_errors=True)
    cluster = LocalCluster(Path(workdir or ".run"), agents=agents, backends=backends, api_port=api_port,
                           netlab=netns_hypervisors, frontends=frontends, **options)
    with contextlib.ExitStack() as cleanup:
        if compute:
            cleanup.enter_context(libvirtd.running())
            # Guests go down with the cloud, and are found shut off at its next start; then
            # (callbacks run last first) the pools' names are freed, their files kept.
            cleanup.callback(libvirtd.release_pools_under, cluster.workdir)
            cleanup.callback(libvirtd.power_off_under, cluster.workdir)
        cleanup.callback(cluster.stop)
        gave_up = _serve(cluster, agents, backends, compute, netns_hypervisors)
    if gave_up is not None:
        click.echo(f"stopped: {gave_up}", err=True)
        sys.exit(1)
    click.echo("stopped")


def _share_of_this_machine(backends: int) -> dict[str, int]:
    """Each backend's part of this machine, so that the cloud offers the machine once, not once a
    hypervisor (at least a CPU each: the scheduler overcommits CPUs anyway)."""
    memory = psutil.virtual_memory().total >> 20
    disk = shutil.disk_usage(Path.cwd()).total >> 30  # .run, or a --workdir usually on the same disk
    return {"vcpus": max(1, (os.cpu_count() or 1) // backends), "memory_mb": max(1, memory // backends),
            "disk_gb": max(1, disk // backends)}


def _serve(cluster: LocalCluster, agents: int, backends: int, compute: bool, networks: bool) -> str | None:
    """Start the cloud and keep it up until Ctrl-C or SIGTERM; why it gave up instead, if it did."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        click.echo(f"starting {len(cluster.frontend_names)} frontend(s), {agents} agents and {backends} backends ...")
        cluster.start()
        if compute:
            click.echo(f"offering the tiny guest as image {demo.IMAGE!r} with flavor {demo.FLAVOR!r} ...")
            demo.offer_tiny_guest(cluster, guest.build(cluster.workdir / "guest"))
        if networks:
            click.echo(f"offering network {demo.NETWORK!r} with a router to {demo.EXTERNAL!r} ...")
            demo.offer_network(cluster)
    except Exception as exc:
        click.echo(f"could not start the cloud: {exc}", err=True)
        sys.exit(1)
    click.echo(_instructions(cluster, compute, networks))
    supervisor = Supervisor(cluster)
    while not stop.wait(POLL_S):
        gave_up = supervisor.check()
        if gave_up is not None:
            return gave_up
    return None


class Supervisor:
    """Restarts the cloud's daemons as systemd restarts them on real hosts (see the constants above)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        now = time.monotonic()
        self.started = dict.fromkeys(cluster.procs, now)
        self.restarts = dict.fromkeys(cluster.procs, 0)
        self.quick_failures = dict.fromkeys(cluster.procs, 0)
        #: daemon -> when to restart it, and how it ended
        self.due: dict[str, tuple[float, str]] = {}
        #: daemons stopped cleanly: someone meant it (a plain kill), and systemd leaves such a unit down too
        self.stopped: set[str] = set()

    def check(self) -> str | None:
        """Take note of the daemons that ended and restart those due; why to give up, if one must not be."""
        now = time.monotonic()
        for name, proc in self.cluster.procs.items():
            if name not in self.due and name not in self.stopped and proc.poll() is not None:
                gave_up = self._ended(name, proc.returncode, now)
                if gave_up is not None:
                    return gave_up
        for name, (when, how) in list(self.due.items()):
            if when <= now:
                del self.due[name]
                self._restart(name, how)
        return None

    def _ended(self, name: str, status: int, now: float) -> str | None:
        how = _ending(status)
        if status in CLEAN_STATUSES:
            click.echo(f"{name} {how}: stopped on purpose, so left down (only failed daemons are restarted)")
            self.stopped.add(name)
            return None
        if status == NO_RESTART_STATUS:
            return self._give_up(name, f"{how}: a bad config or a start-up error, which a restart cannot fix")
        quick = now - self.started[name] < QUICK_FAILURE_S
        self.quick_failures[name] = self.quick_failures[name] + 1 if quick else 0
        if self.quick_failures[name] >= CRASH_LOOP:
            return self._give_up(name, f"{how}, failing {CRASH_LOOP} times in a row within "
                                       f"{QUICK_FAILURE_S:g} s of its start: a crash loop")
        self.due[name] = (now + RESTART_DELAY_S, how)
        return None

    def _restart(self, name: str, how: str) -> None:
        self.cluster.respawn(name)
        self.started[name] = time.monotonic()
        self.restarts[name] += 1
        click.echo(f"{name} {how}; restarted as pid {self.cluster.procs[name].pid} (restart {self.restarts[name]})")

    def _give_up(self, name: str, why: str) -> str:
        log = self.cluster.workdir / "logs" / f"{name}.log"
        tail = self.cluster.log_text(name).strip().splitlines()[-LOG_TAIL:] or ["(empty)"]
        return f"{name} {why}.  The end of {os.path.relpath(log)}:\n" + "\n".join(f"    {line}" for line in tail)


def _ending(status: int) -> str:
    """How a daemon ended, from its exit status (a signal's is negative)."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:  # a real-time signal has no name of its own
        return f"was killed by signal {-status}"


def _instructions(cluster: LocalCluster, compute: bool, networks: bool) -> str:
    clctl = os.path.relpath(Path(sys.executable).parent / "clctl")
    if compute and networks and cluster.lab is not None:
        outside = cluster.lab.outside
        launch = f"""    {clctl} instance create demo --flavor {demo.FLAVOR} --image {demo.IMAGE} --nic network={demo.NETWORK} --wait
    {clctl} instance console demo     # its hostname, and its DHCP lease on {demo.NETWORK}
    {clctl} fip create                # an address of {demo.EXTERNAL}; then: {clctl} fip associate <address> <port id>
    {clctl} sg rule-add default --direction ingress --protocol icmp --wait   # the default group lets in only its own
    ip netns exec {outside} ping <address>    # from the lab's outside, through the floating IP

Each backend is a hypervisor in a network namespace of its own ({cluster.lab.prefix}hv*), joined to
the others by an underlay bridge; guests (QEMU through libvirt) get tenant networks there (VXLAN,
a router on every hypervisor, DHCP, SNAT to the lab's outside namespace {outside}).  Stopping
the cloud powers the guests off and removes the namespaces."""
    elif compute:
        launch = f"""    {clctl} instance create demo --flavor {demo.FLAVOR} --image {demo.IMAGE} --wait
    {clctl} instance console demo     # the guest reports its hostname on its serial console

The backends run real guests (QEMU through libvirt) on this machine; stopping the
cloud powers them off, and they are found shut off at the next start."""
    else:
        launch = """
The backends run no compute driver (not root, or libvirt missing: sh scripts/ensure-libvirt.sh),
so instances cannot be launched on them."""
    password_file = os.path.relpath(cluster.workdir / "frontend" / "admin-password")
    ca_file = os.path.relpath(cluster.ca_file)
    endpoints = " ".join(f"--endpoint {url}" for url in cluster.api_urls.values())
    standbys = ""
    if cluster.standbys:
        pids = ", ".join(f"{name} pid {cluster.procs[name].pid} at {cluster.api_urls[name]}"
                         for name in cluster.frontend_names)
        standbys = f"""
Frontends ({pids})
share the PostgreSQL server at {cluster.database}; the first leads, the others serve the
API and stand by to take over (kill -9 the leader's pid and watch {clctl} frontend list).
"""
    return f"""
cloudland is up: API at {cluster.api_url} (docs at {cluster.api_url}/docs), tree at
{cluster.frontend_endpoint}, state and logs in {cluster.workdir}.  The API's certificate is
self-signed, generated on the first start: {ca_file}.
{standbys}
The web console is at {cluster.api_url}/ui/ (log in as admin with the password in
{password_file}; the browser must be told to accept the self-signed certificate).  In another shell:

    {clctl} login {endpoints} --ca-file {ca_file} --username admin --password-stdin < {password_file}
    {clctl} tree
    {clctl} ping
    {clctl} hypervisor list
    {clctl} hypervisor enrolments    # the one-time tokens the nodes enrolled their tree keys with
{launch}
Ctrl-C stops everything."""


main()
