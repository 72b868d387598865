"""Tree nodes as processes of their own, for tests that stop, kill or starve one of them.

A leaf here answers the backend's system ops and two test ops that run on the tree's own
thread: ``test.hang`` blocks the loop for good (a live process whose loop hangs) and
``test.busy`` keeps it busy computing for a while (slow, never dead).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from backend.argcheck import Number, Record
from backend.ops import system
from backend.registry import Op, OpRegistry
from bench.procs import prepare_child
from sci import Journal, Leaf, Relay, TreeSettings

__all__ = ["run_leaf", "run_relay"]

BUSY_ARGS = Record({"seconds": Number(0, 30)})


def _hang(args: dict[str, Any]) -> dict[str, Any]:
    while True:
        time.sleep(1)


def _busy(args: dict[str, Any]) -> dict[str, Any]:
    end = time.monotonic() + args["seconds"]
    spins = 0
    while time.monotonic() < end:
        spins += 1
    return {"spins": spins}


def run_relay(name: str, registrar: str, settings: TreeSettings) -> None:
    prepare_child()
    relay = Relay(name, registrar, "tcp://127.0.0.1:0", settings)
    signal.signal(signal.SIGTERM, lambda *_: relay.stop())
    relay.run()


def run_leaf(name: str, registrar: str, settings: TreeSettings) -> None:
    prepare_child()
    registry = OpRegistry(2)
    system.register(registry)
    registry.register(Op("test.hang", _hang, Record({}), durable=False, inline=True))
    registry.register(Op("test.busy", _busy, BUSY_ARGS, durable=False, inline=True))
    leaf = Leaf(name, registrar, settings, registry, Journal(None))
    signal.signal(signal.SIGTERM, lambda *_: leaf.stop())
    try:
        leaf.run()
    finally:
        registry.close()
