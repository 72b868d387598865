from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
import structlog.testing

from backend.argcheck import UUID, Int, Record, optional
from backend.ops import system
from backend.registry import Op, OpError, OpRegistry
from sci import Journal, Leaf, Result, Status, Targets, TreeRoot, TreeSettings

NO_ARGS = Record({})


def run(registry: OpRegistry, op: str, args: object) -> Result:
    box: list[Result] = []
    done = threading.Event()

    def answer(result: Result) -> None:
        box.append(result)
        done.set()

    registry.execute(op, args, answer)
    assert done.wait(5)
    return box[0]


class Counting:
    """A handler that counts its calls: the proof that a refused command never reached it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(args)
        return {"seen": sorted(args)}


def test_ops_and_their_failures() -> None:
    registry = OpRegistry(2)
    system.register(registry)

    def broken(args: dict[str, Any]) -> None:
        raise RuntimeError("bug")

    def refuses(args: dict[str, Any]) -> None:
        raise OpError("disk full", 28)

    registry.register(Op("broken", broken, NO_ARGS, durable=True))
    registry.register(Op("refuses", refuses, NO_ARGS, durable=True))
    assert registry.is_durable("ping") is False and registry.is_durable("nope") is None
    assert run(registry, "ping", None).status is Status.OK
    assert run(registry, "ping", {"round": "r1"}).status is Status.OK
    assert run(registry, "info", {}).payload["memory_total"] > 0
    crashed = run(registry, "broken", {})
    assert crashed.status is Status.ERROR and crashed.exit_status == 70 and "RuntimeError" in crashed.message
    refused = run(registry, "refuses", {})
    assert (refused.message, refused.exit_status) == ("disk full", 28)
    assert run(registry, "ping", [1, 2]).exit_status == 64
    with pytest.raises(ValueError):
        registry.register(Op("ping", lambda a: None, NO_ARGS, durable=False))
    registry.close()


def test_bad_arguments_never_reach_the_handler() -> None:
    registry = OpRegistry(2)
    handler = Counting()
    schema = Record({"instance_id": UUID, "bytes": optional(Int(1, 100))})
    registry.register(Op("probe", handler, schema, durable=False))
    registry.register(Op("probe.inline", handler, schema, durable=False, inline=True))
    good = "0e6f1b1a-3c1d-4b7e-9a55-2f0c9d1e8b7a"
    try:
        for op in ("probe", "probe.inline"):
            for bad in ({}, {"instance_id": good, "bytes": 0}, {"instance_id": good, "extra": 1},
                        {"instance_id": good.upper()}, {"instance_id": None}, [good], "x", 5):
                result = run(registry, op, bad)
                assert (result.status, result.exit_status) == (Status.ERROR, 64), (op, bad)
                assert result.message.startswith(f"{op}: args"), result.message
        assert handler.calls == []
        assert run(registry, "probe", {"instance_id": good, "bytes": 5}).payload == {"seen": ["bytes", "instance_id"]}
        assert run(registry, "probe", None).message == "probe: args.instance_id: missing"
        assert len(handler.calls) == 1
    finally:
        registry.close()


def test_a_refusal_is_logged_once_without_the_value() -> None:
    registry = OpRegistry(1)
    handler = Counting()
    registry.register(Op("probe", handler, Record({"instance_id": UUID}), durable=False, inline=True))
    secret = "s3cret-user-data-" + "x" * 40
    with structlog.testing.capture_logs() as logs:
        result = run(registry, "probe", {"instance_id": secret})
    registry.close()
    assert result.message == "probe: args.instance_id: not a lowercase UUID (it has 57 characters, at most 36)"
    refused = [entry for entry in logs if entry["event"] == "command_refused"]
    assert refused == [{"event": "command_refused", "log_level": "warning", "op": "probe",
                        "field": "args.instance_id", "reason": "not a lowercase UUID (it has 57 characters, at most 36)"}]
    assert secret not in repr(logs) and handler.calls == []


def test_an_unknown_op_is_refused_by_the_registry_with_127() -> None:
    registry = OpRegistry(1)
    system.register(registry)
    result = run(registry, "no.such.op", {})
    registry.close()
    assert (result.status, result.exit_status, result.message) == (Status.ERROR, 127, "unknown op 'no.such.op'")


SETTINGS = TreeSettings(heartbeat_interval=0.2, reattach_grace=2.0)


@pytest.fixture
def one_host() -> Iterator[tuple[TreeRoot, Counting]]:
    """A real root and one leaf on loopback, whose registry holds ``probe`` and the system ops."""
    root = TreeRoot("tcp://127.0.0.1:0", SETTINGS).start()
    registry = OpRegistry(2)
    system.register(registry)
    handler = Counting()
    registry.register(Op("probe", handler, Record({"instance_id": UUID}), durable=True))
    leaf = Leaf("h1", root.endpoint, SETTINGS, registry, Journal(None))
    thread = threading.Thread(target=leaf.run, daemon=True)
    thread.start()
    try:
        root.wait_for_hosts(1, timeout=10)
        yield root, handler
    finally:
        leaf.stop()
        thread.join(5)
        registry.close()
        root.stop()


def test_through_the_tree_unknown_ops_answer_127_and_bad_arguments_64(one_host: tuple[TreeRoot, Counting]) -> None:
    root, handler = one_host

    def submit(op: str, args: Any) -> Result:
        return root.submit(op, args, Targets.to("h1"), timeout=5).wait(10)["h1"]

    unknown = submit("instance.explode", {})
    assert (unknown.status, unknown.exit_status, unknown.message) == (Status.ERROR, 127, "unknown op 'instance.explode'")
    bad = submit("probe", {"instance_id": "$(reboot)"})
    assert (bad.status, bad.exit_status, bad.message) == (Status.ERROR, 64, "probe: args.instance_id: not a lowercase UUID")
    assert submit("ping", {"round": "a\nb"}).exit_status == 64
    assert handler.calls == []
    assert submit("probe", {"instance_id": "0e6f1b1a-3c1d-4b7e-9a55-2f0c9d1e8b7a"}).ok
    assert len(handler.calls) == 1
