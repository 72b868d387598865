"""What the bench's child processes run: a real relay (agent), or many simulated backends.

A simulated backend is a real ``sci.Leaf`` with the backend's real op registry; only the
hypervisor behind it is missing.  Many leaves share one reactor and one zmq context per
process, as sci allows, so that ten thousand hosts fit on one machine.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

import sci
from backend.ops import system
from backend.registry import OpRegistry
from sci.reactor import Reactor
from service.logs import setup_logging

from .procs import prepare_child

__all__ = ["CountingExecutor", "run_agent", "run_sim", "serve"]

#: Interval at which a sim process checks whether to start more leaves.
_PACE_S = 0.01
#: A tag in a command's arguments that the executor counts runs by.
TAG = "round"


class CountingExecutor(sci.Executor):
    """One host's executor: the shared op registry, plus a count of runs per (host, tag).

    The bench tags every command it sends with a unique ``round``; a count above one means
    the tree made a backend run a command twice, which its journal must prevent.
    """

    def __init__(self, host: str, registry: OpRegistry, runs: collections.Counter[tuple[str, Any]]) -> None:
        self.host = host
        self._registry = registry
        self._runs = runs

    def is_durable(self, op: str) -> bool | None:
        return self._registry.is_durable(op)

    def execute(self, op: str, args: Any, done: Callable[[sci.Result], None]) -> None:
        if isinstance(args, dict) and TAG in args:
            self._runs[(self.host, args[TAG])] += 1
        self._registry.execute(op, args, done)


def _open_log(path: str, service: str) -> None:
    # Warning level keeps the files small and still holds every child_dead / parent_lost.
    # The stream stays open for the life of the process.
    setup_logging("warning", service=service, stream=open(path, "a", buffering=1))  # noqa: SIM115


def _security(keys: tuple[str, str] | None, root_key: str | None) -> sci.Security | None:
    if keys is None or root_key is None:
        return None
    return sci.Security(sci.KeyPair(*keys), root_key)


def run_agent(name: str, registrar: str, settings: sci.TreeSettings, log_path: str,
              keys: tuple[str, str] | None = None, root_key: str | None = None) -> None:
    """An agent, as ``agent.daemon`` runs it, minus the config file (``keys``: its CURVE pair, enrolled)."""
    prepare_child()
    _open_log(log_path, "agent")
    relay = sci.Relay(name, registrar, "tcp://127.0.0.1:0", settings, security=_security(keys, root_key))
    signal.signal(signal.SIGTERM, lambda *_: relay.stop())
    relay.run()


class _PacedStart:
    """Starts leaves so that at most ``window`` of them are joining at once.

    The registrar places one JOIN at a time; thousands in one burst would queue past the
    JOIN retry interval and come back as retries that only add to the queue.
    """

    def __init__(self, reactor: Reactor, leaves: list[sci.Leaf], window: int) -> None:
        self._reactor = reactor
        self._todo = collections.deque(leaves)
        self._joining: list[sci.Leaf] = []
        self._window = window

    def step(self) -> None:
        self._joining = [leaf for leaf in self._joining if not leaf.up.attached]
        while self._todo and len(self._joining) < self._window:
            leaf = self._todo.popleft()
            leaf.start()
            self._joining.append(leaf)
        if self._todo:
            self._reactor.call_later(_PACE_S, self.step)


def run_sim(hosts: list[str], registrar: str, settings: sci.TreeSettings, log_path: str, report_path: str,
            window: int, keys: dict[str, tuple[str, str]] | None = None, root_key: str | None = None) -> None:
    """Simulate ``hosts`` in this process until SIGTERM, then write the run counts to ``report_path``."""
    prepare_child()
    _open_log(log_path, "sim")
    ctx = zmq.Context()
    # Per leaf: its DEALER, the monitor PAIR libzmq makes for it, and our end of the monitor.
    ctx.set(zmq.MAX_SOCKETS, 4 * len(hosts) + 64)
    reactor = Reactor()
    registry = OpRegistry(workers=2)
    system.register(registry)
    runs: collections.Counter[tuple[str, Any]] = collections.Counter()
    leaves = [sci.Leaf(host, registrar, settings, CountingExecutor(host, registry, runs), sci.Journal(None),
                       reactor=reactor, ctx=ctx, security=_security(keys[host] if keys else None, root_key))
              for host in hosts]
    try:
        serve(reactor, leaves, window, report_path, runs)
    finally:
        registry.close()
        ctx.destroy(linger=0)


def serve(reactor: Reactor, leaves: list[sci.Leaf], window: int, report_path: str,
          runs: collections.Counter[tuple[str, Any]]) -> None:
    """Start ``leaves`` (``window`` joining at once) and run them until SIGTERM; then write how
    often each ran each tagged command to ``report_path``, and close them."""
    signal.signal(signal.SIGTERM, lambda *_: reactor.stop())
    _PacedStart(reactor, leaves, window).step()
    try:
        reactor.run()
    finally:
        _write_report(report_path, runs, sum(leaf.up.attached for leaf in leaves))
        for leaf in leaves:
            leaf.close()


def _write_report(path: str, runs: collections.Counter[tuple[str, Any]], attached: int) -> None:
    twice = [(host, tag, n) for (host, tag), n in runs.items() if n > 1]
    report = {
        "executions": sum(runs.values()),
        "duplicated": sum(n - 1 for _, _, n in twice),
        "duplicated_examples": twice[:10],
        "attached": attached,
    }
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, path)  # the bench never reads half a report
