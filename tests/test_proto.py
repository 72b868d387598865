"""The wire protocol: builders round-trip, and nothing but FrameError comes out of decode."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sci import proto
from sci.exceptions import FrameError
from sci.proto import Kind
from sci.results import Result, Status


def test_builders_round_trip() -> None:
    cases = [
        (proto.join("h1", proto.Role.BACKEND, 7, None, ["rack1"], "k" * 40), Kind.JOIN,
         ["h1", 2, 7, None, ["rack1"], "k" * 40]),
        (proto.keys(False, {"h1": "k" * 40}, ["h2"], {"h1": "s" * 40}), Kind.KEYS,
         [0, {"h1": "k" * 40}, ["h2"], {"h1": "s" * 40}]),
        (proto.assign(2, [["a1", "tcp://x:1"]]), Kind.ASSIGN, [2, [["a1", "tcp://x:1"]]]),
        (proto.welcome(42, 3), Kind.WELCOME, [42, 3]),
        (proto.reject(proto.RejectCode.NO_SESSION, "gone", 9), Kind.REJECT, [1, "gone", 9]),
        (proto.command("c1", 1, "ping", b"\x80", None, 500, 7), Kind.COMMAND,
         ["c1", 1, "ping", b"\x80", None, 500, 7]),
        (proto.results(5, "c1", 1, {"h1": [0, {}, 0]}), Kind.RESULTS, ["c1", 1, {"h1": [0, {}, 0]}]),
        (proto.status("q", 100), Kind.STATUS, ["q", 100]),
    ]
    for data, kind, fields in cases:
        frame = proto.decode(data)
        assert frame.kind is kind
        assert frame.fields == fields
    assert proto.decode(proto.heartbeat_up(11)).session == 11


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb({"a": 1}), "malformed"),
        (msgpack.packb([proto.VERSION + 1, 6, 0]), "version"),
        (msgpack.packb([proto.VERSION - 1, 6, 0]), "version"),  # a node of the release before
        (msgpack.packb([proto.VERSION, 99, 0]), "malformed"),
        (msgpack.packb([proto.VERSION, 6, "s"]), "malformed"),
        (msgpack.packb([proto.VERSION, 4, 0]), "malformed"),  # WELCOME without its session
        (msgpack.packb([proto.VERSION, 4, 0, True]), "malformed"),  # a bool is not a session number
        (b"\x00" * 5000, "oversized"),
    ],
)
def test_bad_frames_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        proto.decode(data, max_bytes=4096)
    assert err.value.reason == reason


def test_node_ids() -> None:
    assert proto.check_node_id("hv-0042.rack_1") == "hv-0042.rack_1"
    for bad in ["", "-lead", "a b", "x" * 65, "semi;colon", "new\nline", 5]:
        with pytest.raises(FrameError):
            proto.check_node_id(bad)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decode_of_any_bytes_raises_only_frame_error(data: bytes) -> None:
    try:
        proto.decode(data)
    except FrameError:
        pass


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 14), st.integers(-2, 2**33), st.lists(_values, max_size=7))
def test_decode_of_well_formed_msgpack_raises_only_frame_error(kind: int, session: int, fields: list) -> None:
    try:
        proto.decode(msgpack.packb([proto.VERSION, kind, session, *fields]))
    except FrameError:
        pass


def _nested(depth: int) -> list[Any]:
    """A list nested ``depth`` deep, as msgpack decodes it from a peer (repr() gives up near 1000)."""
    return msgpack.unpackb(b"\x91" * depth + b"\xc0")  # type: ignore[no-any-return]


def test_a_peers_deep_nesting_never_reaches_repr() -> None:
    deep = msgpack.packb([_nested(1000), int(Kind.HEARTBEAT), 0])
    with pytest.raises(FrameError, match="version list"):
        proto.decode(deep)
    with pytest.raises(FrameError, match="kind list"):
        proto.decode(msgpack.packb([proto.VERSION, _nested(1000), 0]))
    with pytest.raises(FrameError, match="node id list"):
        proto.check_node_id(_nested(1000))
    with pytest.raises(FrameError, match="'xxx"):
        proto.check_node_id("x" * 100_000)


def test_result_entries_of_any_nesting_become_results() -> None:
    failed = Result.from_wire([int(Status.ERROR), _nested(995), 3])
    assert failed.status is Status.ERROR and failed.message == "list" and failed.exit_status == 3
    malformed = Result.from_wire(_nested(995))
    assert malformed.status is Status.ERROR and malformed.message == "malformed result entry: list"
    assert Result.from_wire([int(Status.ERROR), "disk full", 1]).message == "disk full"
