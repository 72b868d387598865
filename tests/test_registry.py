from __future__ import annotations

import threading

import pytest

from backend.ops import system
from backend.registry import Op, OpError, OpRegistry
from sci import Result, Status


def run(registry: OpRegistry, op: str, args: object) -> Result:
    box: list[Result] = []
    done = threading.Event()
    registry.execute(op, args, lambda r: (box.append(r), done.set()))
    assert done.wait(5)
    return box[0]


def test_ops_and_their_failures() -> None:
    registry = OpRegistry(2)
    system.register(registry)

    def broken(args: dict) -> None:
        raise RuntimeError("bug")

    def refuses(args: dict) -> None:
        raise OpError("disk full", 28)

    registry.register(Op("broken", broken, durable=True))
    registry.register(Op("refuses", refuses, durable=True))
    assert registry.is_durable("ping") is False and registry.is_durable("nope") is None
    assert run(registry, "ping", None).status is Status.OK
    assert run(registry, "info", {}).payload["memory_total"] > 0
    crashed = run(registry, "broken", {})
    assert crashed.status is Status.ERROR and crashed.exit_status == 70 and "RuntimeError" in crashed.message
    refused = run(registry, "refuses", {})
    assert (refused.message, refused.exit_status) == ("disk full", 28)
    assert run(registry, "ping", [1, 2]).exit_status == 64
    with pytest.raises(ValueError):
        registry.register(Op("ping", lambda a: None, durable=False))
    registry.close()
