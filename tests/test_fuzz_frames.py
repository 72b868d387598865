"""Frame fuzzing: whatever a peer sends, the decoder answers with a well-shaped Frame or a
FrameError, and every node role keeps serving.

The live tests run real nodes on loopback and play the part of a peer that got past the
handshake (in the CURVE variants its key is enrolled, so it is a compromised node, not a
stranger): a child of the root or of a relay, or the registrar and parent a leaf or a relay
was pointed at.  After each example the node's thread must be alive, no callback of its loop
may have failed, and a real command must still go through it.

Route entries the fuzzer claims never name the real nodes: an agent that claims another
node's route takes it over (docs/security.md, "A compromised agent"), which is the tree's
trust model, not a crash.  Endpoints it advertises are loopback or unparsable, so that no node
resolves a name.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Iterator, Sequence

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from backend.ops import system
from backend.registry import OpRegistry
from sci import Journal, Leaf, Relay, Status, Targets, TreeRoot, TreeSettings, proto
from sci.counters import MAX_KEYS, add_into, check_counters
from sci.downlink import check_entries
from sci.exceptions import FrameError
from sci.proto import Frame, Kind, Role
from sci.reactor import Reactor
from sci.security import KeyPair, Keyring, Security, connect_curve
from sci.status import valid_entries
from sci.uplink import LinkState, Uplink, UplinkOwner
from tests.support.waiting import until

# Room for a loaded machine's stalls (a third of a second seen on CI): a child is counted dead
# after 2 s of silence, and a relay answers half a second before its parent gives up on it.
SETTINGS = TreeSettings(heartbeat_interval=0.2, heartbeat_misses=10, hop_margin=0.5, fanout=4, reattach_grace=1.0,
                        max_frame_bytes=64 * 1024, counters_interval=0.2)

# Hypothesis ---------------------------------------------------------------------------------

DECODER = settings(derandomize=True, deadline=None, database=None, max_examples=600,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Live nodes keep state from one example to the next, so a failure is reported as found, not
#: shrunk: shrinking would replay it against a node that has moved on (and take minutes).
LIVE = settings(derandomize=True, deadline=None, database=None, max_examples=40,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

#: A fuzzed COMMAND or WELCOME may raise a node's root epoch as far as msgpack goes: the probe
#: after it comes from the newest root there can be, so the node must obey it.
_HIGHEST_EPOCH = 2**64 - 1

#: What decode promises for each kind: the exact types of the fields after [version, kind, session].
SHAPES: dict[Kind, tuple[tuple[type, ...], ...]] = {
    Kind.JOIN: ((str,), (int,), (int,), (str, type(None)), (list,), (str, type(None))),
    Kind.ASSIGN: ((int,), (list,)),
    Kind.HELLO: ((str,), (list,)),
    Kind.WELCOME: ((int,), (int,)),
    Kind.REJECT: ((int,), (str,), (int,)),
    Kind.HEARTBEAT: (),
    Kind.COMMAND: ((str,), (int,), (str,), (bytes,), (list, type(None)), (int,), (int,)),
    Kind.RESULTS: ((str,), (int,), (dict,)),
    Kind.ROUTES: ((list,), (list,)),
    Kind.STATUS: ((str,), (int,)),
    Kind.STATUS_REPLY: ((str,), (dict,)),
    Kind.BYE: (),
    Kind.COUNTERS: ((dict,),),
    Kind.ENROL: ((str,), (int,), (str,)),
    Kind.ENROLLED: ((int,), (str,)),
    Kind.KEYS: ((int,), (dict,), (list,), (dict,)),
    Kind.NOTICE: ((str,), (str,), (bytes,)),
}


class Raw(bytes):
    """Already msgpack, spliced in as it is: nesting written byte by byte, as deep as wanted."""


def _header(n: int, small: int, mid: bytes, big: bytes) -> bytes:
    if n < 16:
        return bytes([small | n])
    return (mid + n.to_bytes(2, "big")) if n < 1 << 16 else (big + n.to_bytes(4, "big"))


def pack(value: Any) -> bytes:
    """msgpack, with Raw parts spliced in as they are."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, list):
        return _header(len(value), 0x90, b"\xdc", b"\xdd") + b"".join(pack(v) for v in value)
    if isinstance(value, dict):
        return _header(len(value), 0x80, b"\xde", b"\xdf") + b"".join(pack(k) + pack(v) for k, v in value.items())
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _nest(depth: int, as_map: bool, leaf: Any) -> Raw:
    return Raw((b"\x81\xa1k" if as_map else b"\x91") * depth + pack(leaf))


def pick(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each about as often as its weight (per mille).  Not st.one_of:
    Hypothesis favours the ends of a range, so one_of's last branch comes up far more often than
    its share; here the drawn number is scattered (7919 is prime to 1000) before it chooses."""
    assert sum(weight for weight, _ in choices) == 1000

    def choose(n: int) -> st.SearchStrategy[Any]:
        n = n * 7919 % 1000
        for weight, strategy in choices:
            if n < weight:
                return strategy
            n -= weight
        raise AssertionError("weights add up to 1000")

    return st.integers(0, 999).flatmap(choose)


def spread(options: Sequence[Any]) -> st.SearchStrategy[Any]:
    """Any of ``options``, each about as often (sampled_from favours the first and the last)."""
    return st.integers(0, 999).map(lambda n: options[n * 7919 % 1000 * len(options) // 1000])


EDGE_INTS = [0, 1, 2, 3, 4, -1, 255, 2**31, 2**32, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 10**18]
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**63), 2**64 - 1))
texts = st.text(st.characters(codec="utf-8"), max_size=24)  # msgpack cannot pack lone surrogates
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(), texts, st.binary(max_size=24),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**33), st.integers(0, 999_999_999)),
)
values = st.recursive(
    scalars,
    # an int map key makes the whole frame undecodable (strict_map_key): now and then, not in every other frame
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        pick((850, texts), (120, st.binary(max_size=4)), (30, ints)), inner, max_size=4),
    max_leaves=16,
)
#: Nesting on both sides of what msgpack unpacks (1024 levels, the frame's own included) and of
#: what repr() and str() manage (~980): the window between them is where handlers break.
deep = st.builds(_nest, spread([2, 511, 512, 960, 975, 985, 990, 995, 1000, 1005, 1010, 1015, 1020, 1025, 3000]),
                 st.booleans(), scalars)
#: Up to 100 KB: over a live node's 64 KiB frame limit, under the 128 KiB at which ZeroMQ drops
#: the connection (a frame that big is the garbage strategy's job).
huge = st.one_of(
    st.integers(1_000, 100_000).map(lambda n: "x" * n),
    st.integers(1_000, 100_000).map(lambda n: b"\x00" * n),
    st.integers(1_000, 20_000).map(lambda n: list(range(n))),
    st.integers(600, 5_000).map(lambda n: {f"k{i}": i for i in range(n)}),
)
anything = pick((700, values), (150, deep), (150, huge))


def near(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly what the field should hold, about one time in sixteen anything at all (nested strategies
    compound this, so most frames still get past decode and into the handlers)."""
    return pick((940, good), (60, anything))


def as_list(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.tuples(*parts).map(list)


# What frames carry, near enough to valid to get past decode and into the handlers ------------

NODE_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
REAL = frozenset({"root", "a0", "h0", "fake"})
SAFE_ENDPOINTS = ["tcp://127.0.0.1:1", "garbage", "tcp://", "tcp://127.0.0.1:abc", "udp://127.0.0.1:5",
                  "inproc://nowhere", ""]
KEYS = [KeyPair.generate().public for _ in range(3)]


def node_ids(pool: list[str]) -> st.SearchStrategy[Any]:
    return near(st.sampled_from(pool) | st.from_regex(NODE_ID, fullmatch=True).filter(lambda n: n not in REAL))


def counter_tables() -> st.SearchStrategy[Any]:
    numbers = st.sampled_from([0, 1, 10**17, 10**18 - 1, 10**18, 2**63 - 1, -1]) | st.floats()
    many = st.integers(500, 700).map(lambda n: {f"fz:{i}": 6 * 10**17 for i in range(n)})
    return near(st.dictionaries(texts | st.binary(max_size=4), numbers, max_size=5) | many)


class Fields:
    """Near-valid field strategies for every kind, given the ids a peer may name."""

    def __init__(self, own: str, names: list[str]) -> None:
        claimable = [own, *[n for n in names if n not in REAL]]
        node = node_ids(claimable)
        anyone = node_ids(names + [own])
        seq = near(st.lists(ints, min_size=2, max_size=2))
        role = near(st.sampled_from([1, 2]) | st.sampled_from([0, 3, 1.0, True]))
        endpoint = near(st.sampled_from(SAFE_ENDPOINTS) | st.none())
        key = near(st.sampled_from(KEYS) | st.text(alphabet="abc", min_size=40, max_size=40) | st.none())
        level = st.integers(1, 4) | st.sampled_from(EDGE_INTS)
        # No fuzzed signature verifies: under CURVE these claims are refused or wait for a key.
        signature = st.none() | st.binary(min_size=64, max_size=64)
        valid_entry = as_list(st.sampled_from(claimable) | st.from_regex(NODE_ID, fullmatch=True).filter(
            lambda n: n not in REAL), st.lists(st.integers(0, 2**63 - 1), min_size=2, max_size=2),
            st.sampled_from(claimable), st.sampled_from([1, 2]), level, st.sampled_from(SAFE_ENDPOINTS) | st.none(),
            st.lists(texts, max_size=2), signature)
        entry = pick((500, valid_entry),
                     (400, as_list(node, seq, anyone, role, near(ints), endpoint, near(st.lists(texts, max_size=3)),
                                   near(signature))),
                     (100, st.lists(values, min_size=7, max_size=9)))
        entries = near(st.lists(entry, max_size=4))
        #: the child signs it (under CURVE) and names its parent when it attaches (Child.attach)
        self.own_entry = as_list(st.just(own), st.lists(st.integers(0, 2**63 - 1), min_size=2, max_size=2),
                                 st.just(""), st.sampled_from([1, 2]), level, st.sampled_from(SAFE_ENDPOINTS),
                                 st.just([]), st.none())
        self.subtree = st.lists(valid_entry, max_size=3) | st.lists(entry, max_size=3)
        # msgpack map keys: a peer may send any scalar, decode lets str and bytes through
        table_keys = pick((500, st.sampled_from(names + [own])), (300, texts), (150, st.binary(max_size=6)),
                          (50, ints))
        result = near(as_list(near(st.integers(-1, 6)), anything, near(ints)))
        self.results_table = near(st.dictionaries(table_keys, result, max_size=4))
        row = near(as_list(anyone, role, near(ints)))
        status_entry = near(as_list(near(st.lists(row, max_size=3)), counter_tables(), counter_tables()))
        self.status_table = near(st.dictionaries(table_keys, status_entry, max_size=4))
        cmd_id = near(texts | st.just("x" * 300))
        body = near(st.binary(max_size=16) | values.map(lambda v: pack(v)))
        op = near(st.sampled_from(["ping", "info", "no-such-op"]) | texts)
        self.kinds: dict[Kind, st.SearchStrategy[list[Any]]] = {
            Kind.JOIN: as_list(anyone, role, near(ints), endpoint, near(st.lists(texts, max_size=3)),
                               near(st.sampled_from(KEYS) | st.none())),
            Kind.ASSIGN: as_list(near(ints), near(st.lists(near(as_list(anyone, endpoint, key)), max_size=3))),
            Kind.HELLO: as_list(anyone, entries),
            Kind.WELCOME: as_list(near(ints), near(ints)),
            Kind.REJECT: as_list(near(st.integers(0, 4)), near(texts), near(ints) | st.just("own")),
            Kind.HEARTBEAT: st.just([]),
            Kind.COMMAND: as_list(cmd_id, near(ints), op, body, near(st.none() | st.lists(anyone, max_size=4)),
                                  near(ints | st.integers(0, 5000)), near(ints)),
            Kind.RESULTS: as_list(cmd_id, near(ints), self.results_table),
            Kind.ROUTES: as_list(entries, near(st.lists(near(as_list(node, seq)), max_size=3))),
            Kind.STATUS: as_list(cmd_id, near(ints | st.integers(0, 2000))),
            Kind.STATUS_REPLY: as_list(cmd_id, self.status_table),
            Kind.BYE: st.just([]),
            Kind.COUNTERS: as_list(counter_tables()),
            Kind.ENROL: as_list(anyone, role, near(texts)),
            Kind.ENROLLED: as_list(near(st.integers(0, 1)), near(texts)),
            Kind.KEYS: as_list(near(st.integers(0, 1)), near(st.dictionaries(table_keys, key, max_size=3)),
                               near(st.lists(anyone, max_size=3)), near(st.dictionaries(table_keys, key, max_size=3))),
            Kind.NOTICE: as_list(anyone, near(texts | st.just("t" * (proto.MAX_TOPIC + 1))), body),
        }

    def frame(self, kinds: Sequence[Kind]) -> st.SearchStrategy[tuple[Any, ...]]:
        """("frame", version, kind, session, fields): session "own" is filled in when sent."""

        @st.composite
        def build(draw: st.DrawFn) -> tuple[Any, ...]:
            kind = draw(spread(kinds))
            fields = draw(self.kinds[kind])
            cut = draw(spread([None] * 18 + ["short", "long"]))
            if cut == "short":
                fields = fields[:-1]
            elif cut == "long":
                fields = [*fields, draw(values)]
            version = draw(pick((960, st.just(proto.VERSION)), (40, anything)))
            code = draw(pick((960, st.just(int(kind))), (40, anything)))
            session = draw(pick((800, st.just("own")), (100, st.just(0)), (100, ints)))
            return ("frame", version, code, session, fields)

        return build()


def garbage() -> st.SearchStrategy[tuple[Any, ...]]:
    raw = pick((500, st.binary(max_size=64)), (470, anything.map(pack)), (30, st.just(b"\x00" * 200_000)))
    return pick((700, st.tuples(st.just("raw"), raw)),
                (300, st.tuples(st.just("parts"), st.lists(st.binary(max_size=16), min_size=2, max_size=4))))


def encode_frame(action: tuple[Any, ...], session: int) -> bytes:
    """The frame an action describes, with "own" (as the session, or a REJECT's) the live one."""
    _, version, code, sess, fields = action
    fields = [session if type(f) is str and f == "own" else f for f in fields]
    return pack([version, code, session if sess == "own" else sess, *fields])


# The decoder ---------------------------------------------------------------------------------


def check_decode(data: bytes, max_bytes: int = 64 * 1024) -> Frame | None:
    """decode's whole contract: a Frame of the declared shape, or FrameError; nothing else."""
    try:
        frame = proto.decode(data, max_bytes)
    except FrameError as exc:
        assert exc.reason in {"oversized", "undecodable", "malformed", "version"}
        return None
    assert type(frame.kind) is Kind and type(frame.session) is int
    shape = SHAPES[frame.kind]
    assert len(frame.fields) == len(shape)
    for value, allowed in zip(frame.fields, shape):
        assert type(value) in allowed, (frame.kind, value)
    return frame


@DECODER
@given(st.binary(max_size=2000))
def test_decode_of_any_bytes(data: bytes) -> None:
    check_decode(data)


@DECODER
@given(anything)
def test_decode_of_any_msgpack_value(value: Any) -> None:
    check_decode(pack(value))


@DECODER
@given(Fields("fz", ["fz", "fz-1", "h0", "root"]).frame(list(Kind)))
def test_decode_of_near_valid_frames(action: tuple[Any, ...]) -> None:
    check_decode(encode_frame(action, 7))


@DECODER
@given(Fields("fz", ["fz"]).frame(list(Kind)), st.data())
def test_decode_of_mangled_valid_frames(action: tuple[Any, ...], data: st.DataObject) -> None:
    raw = bytearray(encode_frame(action, 7))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "dup"]))
        if op == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[at:]
            if not raw:
                break
        else:
            raw[at:at] = raw[at:at + data.draw(st.integers(1, 8))]
    check_decode(bytes(raw))


def test_decode_past_the_depth_limits_and_at_the_size_limit() -> None:
    for depth in (1000, 1020, 1024, 1025, 100_000):
        check_decode(pack([_nest(depth, False, None), Kind.HEARTBEAT, 0]))
        check_decode(pack([proto.VERSION, _nest(depth, True, 1), 0]))
        check_decode(pack([proto.VERSION, int(Kind.RESULTS), 1, "c", 1, {"h": [1, _nest(depth, False, "x"), 0]}]))
    big = pack([proto.VERSION, int(Kind.COMMAND), 0, "c", 1, "ping", b"", None, 1, 0])
    assert check_decode(big, max_bytes=len(big)) is not None
    assert check_decode(big, max_bytes=len(big) - 1) is None


# Live nodes -----------------------------------------------------------------------------------


@pytest.fixture
def crashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every exception a node's loop caught (the reactor logs them and serves on: here they fail the test)."""
    seen: list[str] = []

    def guarded(fn: Callable[..., object], *args: object) -> object:
        try:
            return fn(*args)
        except Exception:
            seen.append(traceback.format_exc())
            return False

    monkeypatch.setattr(Reactor, "_guarded", staticmethod(guarded))
    return seen


def spawn(node: Relay | Leaf) -> threading.Thread:
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    return thread


def registry() -> OpRegistry:
    ops = OpRegistry(2)
    system.register(ops)
    return ops


class Child:
    """A fuzzing child: one DEALER named after the node it claims to be, attaching under ``parent``."""

    def __init__(self, name: str, endpoint: str, security: Security | None, server_key: str | None,
                 parent: str) -> None:
        self.name = name
        self.parent = parent
        self.signer = security.signer if security is not None else None
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, name.encode())
        if security is not None and server_key is not None:
            connect_curve(self.sock, security, server_key)
        self.sock.connect(endpoint)
        self.session = 0
        self._beat = 0.0

    def send(self, data: bytes) -> None:
        if len(data) > 2 * SETTINGS.max_frame_bytes:
            self.session = 0  # ZeroMQ's MAXMSGSIZE: the parent drops the connection, the session with it
        self.sock.send(data)

    def drain(self, timeout_ms: int = 0) -> list[Frame]:
        """Read what the parent sent (a WELCOME or REJECT updates the session); heartbeat if due."""
        got = []
        while self.sock.poll(timeout_ms):
            timeout_ms = 0
            frame = proto.decode(self.sock.recv())
            if frame.kind is Kind.WELCOME:
                self.session = frame.fields[0]
            elif frame.kind is Kind.REJECT and frame.fields[2] in (0, self.session):
                self.session = 0
            got.append(frame)
        if self.session and time.monotonic() - self._beat > SETTINGS.heartbeat_interval / 2:
            self._beat = time.monotonic()
            self.send(proto.heartbeat_up(self.session))
        return got

    def attach(self, entries: list[Any], timeout: float = 0.2) -> bool:
        """HELLO with these entries (own first, claimed and signed as a real node would);
        True once welcomed (a bad HELLO is dropped unanswered)."""
        if self.signer is not None:
            own = entries[0]
            own[2] = self.parent
            entries = [self.signer.sign(own), *entries[1:]]
        self.send(proto.hello(self.name, entries))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for frame in self.drain(20):
                if frame.kind is Kind.WELCOME:
                    return True
                if frame.kind is Kind.REJECT and frame.fields[0] != proto.RejectCode.NO_SESSION:
                    return False
        return False

    def wait_for(self, kind: Kind, timeout: float = 3) -> Frame:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for frame in self.drain(20):
                if frame.kind is kind:
                    return frame
        raise AssertionError(f"{self.name}: no {kind.name} within {timeout}s")

    def keep_alive_until(self, done: Callable[[], bool], timeout: float) -> None:
        end = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < end, f"{self.name}: not done within {timeout}s"
            self.drain(20)

    def play(self, actions: list[tuple[Any, ...]]) -> None:
        for action in actions:
            if action[0] == "frame":
                self.send(encode_frame(action, self.session))
            elif action[0] == "raw":
                self.send(action[1])
            else:
                self.sock.send_multipart(action[1])
            self.drain()

    def close(self) -> None:
        self.sock.close(linger=0)


class Tree:
    """root -> a0 -> h0, with or without CURVE; the fuzzers' keys are enrolled at the root."""

    def __init__(self, curve: bool) -> None:
        self.keys = {name: KeyPair.generate() for name in ("root", "a0", "h0", "fz-root", "fz-relay", "fz-join")}
        root_key = self.keys["root"].public
        self.security = {n: Security(k, root_key) for n, k in self.keys.items()} if curve else {}
        root_security = None
        if curve:
            root_security = Security(self.keys["root"], root_key, enroller=lambda *_: "enrolment is closed here")
        if curve:
            assert root_security is not None
            nodes = self.keys.keys() - {"root"}
            # Enrolled, and their signing keys known as after each one's first JOIN.
            root_security.keyring = Keyring({n: self.keys[n].public for n in nodes},
                                            signers={n: self.security[n].signer.public for n in nodes})
        self.root = TreeRoot("tcp://127.0.0.1:0", SETTINGS, security=root_security).start()
        self.relay = Relay("a0", self.root.endpoint, "tcp://127.0.0.1:0", SETTINGS, security=self.security.get("a0"))
        self.threads = [spawn(self.relay)]
        until(lambda: any(n.node_id == "a0" and n.up for n in self.root.nodes()), 10, "a0 attached")
        self.leaf = Leaf("h0", self.root.endpoint, SETTINGS, registry(), Journal(None), security=self.security.get("h0"))
        self.threads.append(spawn(self.leaf))
        self.root.wait_for_hosts(1, timeout=10)
        #: the fuzzing children, kept across examples
        self.fuzzers: dict[str, Child] = {}

    def fuzzer(self, name: str, at: str) -> Child:
        """A child named ``name`` connected to the root's (at="root") or the relay's ROUTER."""
        if name not in self.fuzzers:
            endpoint = self.root.endpoint if at == "root" else self.relay.down.bound_endpoint
            server = self.keys[at if at == "root" else "a0"].public if self.security else None
            parent = self.root.node_id if at == "root" else "a0"
            self.fuzzers[name] = Child(name, endpoint, self.security.get(name), server, parent)
        return self.fuzzers[name]

    def attached(self, child: Child, role: Role) -> None:
        """``child`` attached with a plain entry of its own, and its route known at the root."""
        if child.session:
            return
        # A loaded machine may take more than a heartbeat to welcome it or route it: it heartbeats
        # meanwhile, or its parent would count it dead before the example begins.
        assert child.attach([[child.name, [1, time.time_ns()], "", int(role), 1, "tcp://127.0.0.1:1", [], None]], 2.0)
        child.keep_alive_until(lambda: any(n.node_id == child.name and n.up for n in self.root.nodes()), 5)

    def healthy(self, crashes: list[str]) -> None:
        assert not crashes, crashes[0]
        assert self.root.running and all(t.is_alive() for t in self.threads)
        result = self.root.submit("ping", targets=Targets.to("h0"), timeout=5).wait(10)["h0"]
        assert result.ok, result
        assert not crashes, crashes[0]

    def stop(self) -> None:
        for child in self.fuzzers.values():
            child.close()
        self.leaf.stop()
        self.relay.stop()
        for thread in self.threads:
            thread.join(5)
        self.root.stop()


@pytest.fixture(params=["plain", "curve"])
def tree(request: pytest.FixtureRequest, crashes: list[str]) -> Iterator[Tree]:
    built = Tree(curve=request.param == "curve")
    try:
        yield built
    finally:
        built.stop()


PARENTS = {"root": "fz-root", "relay": "fz-relay"}
Script = tuple[bool, list[Any], list[tuple[Any, ...]]]


def child_script(own: str) -> st.SearchStrategy[Script]:
    fields = Fields(own, [own, "fz-1", "fz-2", "fz-3", "h0", "a0", "root"])
    actions = st.lists(pick((850, fields.frame(list(Kind))), (150, garbage())), min_size=1, max_size=10)
    return st.tuples(st.booleans(), st.tuples(fields.own_entry, fields.subtree).map(lambda p: [p[0], *p[1]]), actions)


@pytest.mark.slow
@pytest.mark.parametrize("parent", ["root", "relay"])
@LIVE
@given(script=st.data())
def test_parent_serves_on_whatever_a_child_sends(tree: Tree, crashes: list[str], parent: str,
                                                 script: st.DataObject) -> None:
    """A child that HELLOs with odd subtrees, then sends anything: frames of every kind with
    fields of any type, wrong sessions, garbage, multipart messages."""
    hello, entries, actions = script.draw(child_script(PARENTS[parent]))
    child = tree.fuzzer(PARENTS[parent], parent)
    if hello or not child.session:
        child.attach(entries)
    child.play(actions)
    child.drain(20)
    tree.healthy(crashes)


@pytest.mark.slow
@pytest.mark.parametrize("parent", ["root", "relay"])
@settings(LIVE, max_examples=25)
@given(answer=st.data())
def test_any_results_table_for_a_live_command(tree: Tree, crashes: list[str], parent: str,
                                              answer: st.DataObject) -> None:
    """A backend child answers a real command with any table: its own entry of any shape and
    depth, other hosts, bytes keys, a wrong wave; the command still ends with one result per host."""
    name = PARENTS[parent]
    child = tree.fuzzer(name, parent)
    tree.attached(child, Role.BACKEND)
    fields = Fields(name, [name, "fz-1", "a0", "root"])
    handle = tree.root.submit("ping", targets=Targets.to("h0", name), timeout=2)
    cmd_id, wave = child.wait_for(Kind.COMMAND).fields[:2]
    # Not over the frame limit: a dropped frame only makes the command wait for its deadline.
    data = pick((600, values), (400, deep))
    # LOST (4) now and then: the root then waits out the grace for a route that does not come back
    status = spread([0, 1, 2, 3] * 2 + [4, -1])
    entry = answer.draw(pick((800, as_list(status, data, ints)), (200, data)), "own entry")
    # h0's is a forgery: its parent refuses answers for hosts not routed through the sender
    others = st.dictionaries(st.sampled_from(["h0", "a0", "root", "fz-1"]) | texts | st.binary(max_size=4), data,
                             max_size=3)
    table = {**answer.draw(others, "others"), name: entry}
    child.send(pack([proto.VERSION, int(Kind.RESULTS), child.session, cmd_id,
                     answer.draw(pick((900, st.just(wave)), (100, ints)), "wave"), table]))
    child.play(answer.draw(st.lists(fields.frame([Kind.RESULTS]), max_size=3), "more"))
    child.keep_alive_until(handle.done, 5)
    results = handle.wait(0)
    assert set(results) == {"h0", name}, results
    # Under the relay, h0's answer is gathered with the fuzzer's, which may never come right: it
    # then leaves at the relay's flush, just before the deadline, and a loaded machine can miss
    # that.  Whether the relay still serves is what tree.healthy asks.
    assert results["h0"].ok or (parent == "relay" and results["h0"].status is Status.TIMEOUT), results
    tree.healthy(crashes)


@pytest.mark.slow
@pytest.mark.parametrize("parent", ["root", "relay"])
@settings(LIVE, max_examples=20)
@given(answer=st.data())
def test_any_status_reply(tree: Tree, crashes: list[str], parent: str, answer: st.DataObject) -> None:
    """An agent child answers a real tree status query with any table; the report still comes,
    and the real relay is in it.  (The child may report a0 or h0 as its own children with any
    heartbeat age, so they may show as suspect: status replies are taken on trust.)"""
    name = PARENTS[parent]
    child = tree.fuzzer(name, parent)
    tree.attached(child, Role.AGENT)
    fields = Fields(name, [name, "fz-1", "a0", "h0", "root"])
    # Drawn before the query: making big examples holds the GIL that the tree's threads, in
    # this same process, need to answer in time (a relay that misses the deadline reads silent).
    table = answer.draw(fields.status_table, "table")
    more = answer.draw(st.lists(fields.frame([Kind.STATUS_REPLY, Kind.COUNTERS]), max_size=3), "more")
    report: list[Any] = []
    asking = threading.Thread(target=lambda: report.append(tree.root.tree_report(timeout=3.0)))
    asking.start()
    try:
        query = child.wait_for(Kind.STATUS).fields[0]
        child.send(pack([proto.VERSION, int(Kind.STATUS_REPLY), child.session, query, table]))
        child.play(more)
    finally:
        # Also when hypothesis discards the example midway: its query must not outlive it.
        child.keep_alive_until(lambda: not asking.is_alive(), 5)
    assert report, "tree_report raised (see the thread's traceback)"
    nodes = {n.node_id: n for n in report[0].nodes}
    assert nodes["a0"].state in ("up", "suspect") and nodes["h0"].state in ("up", "suspect"), nodes
    tree.healthy(crashes)


@pytest.mark.slow
@pytest.mark.parametrize("tree", ["plain"], indirect=True)  # placement does not depend on CURVE
@settings(LIVE, max_examples=25)
@given(claims=st.data())
def test_root_places_joiners_whatever_routes_claim(tree: Tree, crashes: list[str], claims: st.DataObject) -> None:
    """An agent child claims a subtree of agents at any level with any endpoint; nodes that
    join next are still placed (ASSIGN) or refused, never left unanswered."""
    child = tree.fuzzer("fz-root", "root")
    fields = Fields("fz-root", ["fz-root", "fz-1", "fz-2"])
    own = claims.draw(fields.own_entry, "own")
    own[3] = int(Role.AGENT)
    child.attach([own, *claims.draw(fields.subtree, "subtree")])
    joiner = tree.fuzzer("fz-join", "root")
    role = claims.draw(st.sampled_from([Role.AGENT, Role.BACKEND]), "joiner role")
    joiner.send(proto.join("fz-join", role, 1, "tcp://127.0.0.1:1", [], None))
    answer = joiner.wait_for(Kind.ASSIGN, timeout=2)
    level, parents = answer.fields
    assert 0 < level <= 2**16 + 1 and parents and all(type(p[1]) is str for p in parents)
    tree.healthy(crashes)


# A fuzzing parent ----------------------------------------------------------------------------


class FakeParent:
    """The registrar and the parent in one ROUTER, as a compromised root would be: it places
    agents under itself and backends under the agent that joined, welcomes every HELLO,
    heartbeats, and sends down whatever the test gives it."""

    def __init__(self, keys: KeyPair | None) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()  # no ZAP handler: any client key gets in
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if keys is not None:
            self.sock.setsockopt(zmq.CURVE_SERVER, 1)
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
        self.sock.bind("tcp://127.0.0.1:0")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.key = keys.public if keys is not None else None
        #: where backends are placed: [agent id, its endpoint, its key], once an agent joined
        self.agent: list[Any] | None = None
        self.agent_key: str | None = None
        #: the keyring sent to an agent after each WELCOME (CURVE only), and the signing keys
        self.ring: dict[str, str] = {}
        self.signers: dict[str, str] = {}
        #: sent before the real ASSIGN at the next JOIN
        self.assign_first: list[bytes] = []
        self.sessions: dict[str, int] = {}
        self.results: dict[Any, dict[Any, Any]] = {}
        self._next_session = itertools.count(1)
        self._beat = 0.0

    def send(self, node: str, data: bytes) -> None:
        self.sock.send_multipart([node.encode(), data])

    def pump(self, seconds: float, done: Callable[[], bool] = lambda: False) -> None:
        """Serve the nodes for ``seconds``, or until ``done()``."""
        end = time.monotonic() + seconds
        while not done():
            if time.monotonic() - self._beat > SETTINGS.heartbeat_interval / 2:
                self._beat = time.monotonic()
                for node in self.sessions:
                    self.send(node, proto.heartbeat_down())
            left = end - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(min(left, 0.05) * 1000))):
                if left <= 0:
                    return
                continue
            parts = self.sock.recv_multipart()
            try:
                frame = proto.decode(parts[-1])
            except FrameError:
                continue
            self._on_frame(parts[0], frame)

    def _on_frame(self, identity: bytes, frame: Frame) -> None:
        if frame.kind is Kind.JOIN:
            node, role, _, endpoint, _, _ = frame.fields
            if role == Role.AGENT:
                self.agent = [node, endpoint, self.agent_key]
                parents = [["fake", self.endpoint, self.key]]
            else:
                parents = [self.agent] if self.agent else [["fake", self.endpoint, self.key]]
            for data in self.assign_first:
                self.sock.send_multipart([identity, data])
            self.assign_first = []
            self.sock.send_multipart([identity, proto.assign(1 if role == Role.AGENT else 2, parents)])
        elif frame.kind is Kind.HELLO:
            node, entries = frame.fields
            self.sessions[node] = next(self._next_session)
            self.send(node, proto.welcome(self.sessions[node], 0))
            if self.ring and entries[0][3] == Role.AGENT:
                self.send(node, proto.keys(True, self.ring, [], self.signers))
        elif frame.kind is Kind.RESULTS:
            self.results.setdefault(frame.fields[0], {}).update(frame.fields[2])

    def answers(self, via: str, host: str, timeout: float = 10) -> None:
        """A well-formed ping through ``via`` comes back OK from ``host`` (sent again while it does not)."""
        cmd_id = uuid.uuid4().hex
        end = time.monotonic() + timeout

        def ok() -> bool:
            entry = self.results.get(cmd_id, {}).get(host)
            return entry is not None and entry[0] == 0

        for wave in itertools.count(1):
            if self.ring:
                self.send(via, proto.keys(True, self.ring, [], self.signers))  # undo what a fuzzed KEYS did
            self.send(via, proto.command(cmd_id, wave, "ping", proto.pack_body(None), [host], 2000, _HIGHEST_EPOCH))
            self.pump(0.3, ok)
            if ok():
                return
            entry = self.results.get(cmd_id, {}).get(host)
            assert time.monotonic() < end, f"no answer from {host} via {via} within {timeout}s: {entry}"

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class Subtree:
    """A leaf, or a relay with a leaf under it, whose registrar and parent is a FakeParent."""

    def __init__(self, with_relay: bool, curve: bool) -> None:
        keys = {name: KeyPair.generate() for name in ("fake", "a0", "h0")}
        self.parent = FakeParent(keys["fake"] if curve else None)
        security = {n: Security(k, keys["fake"].public) for n, k in keys.items()} if curve else {}
        if curve:
            self.parent.agent_key = keys["a0"].public
            self.parent.ring = {"a0": keys["a0"].public, "h0": keys["h0"].public}
            self.parent.signers = {"a0": security["a0"].signer.public, "h0": security["h0"].signer.public}
        self.nodes: list[Relay | Leaf] = []
        if with_relay:
            self.nodes.append(Relay("a0", self.parent.endpoint, "tcp://127.0.0.1:0", SETTINGS,
                                    security=security.get("a0")))
        self.nodes.append(Leaf("h0", self.parent.endpoint, SETTINGS, registry(), Journal(None),
                               security=security.get("h0")))
        self.threads = []
        for node in self.nodes:
            self.threads.append(spawn(node))
            self.parent.pump(0.3)
        self.top = self.nodes[0].node_id
        self.healthy([])

    def healthy(self, crashes: list[str]) -> None:
        assert not crashes, crashes[0]
        assert all(t.is_alive() for t in self.threads)
        self.parent.answers(self.top, "h0")
        assert not crashes, crashes[0]

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        for thread in self.threads:
            thread.join(5)
        self.parent.close()


@pytest.fixture(params=["plain", "curve"])
def subtree(request: pytest.FixtureRequest, crashes: list[str], top: str) -> Iterator[Subtree]:
    built = Subtree(with_relay=top == "relay", curve=request.param == "curve")
    try:
        yield built
    finally:
        built.stop()


def parent_script() -> st.SearchStrategy[tuple[list[bytes], list[tuple[Any, ...]]]]:
    fields = Fields("fake", ["fake", "a0", "h0", "fz-1", "fz-2"])
    downward = [Kind.COMMAND, Kind.COMMAND, Kind.COMMAND, Kind.STATUS, Kind.KEYS, Kind.KEYS, Kind.REJECT,
                Kind.WELCOME, Kind.HEARTBEAT, Kind.ASSIGN, Kind.ENROLLED]
    assigns = st.lists(fields.frame([Kind.ASSIGN]).map(lambda a: encode_frame(a, 0)), max_size=2)
    actions = st.lists(pick((600, fields.frame(downward)), (250, fields.frame(list(Kind))), (150, garbage())),
                       min_size=1, max_size=12)
    return st.tuples(assigns, actions)


def fuzz_parent(subtree: Subtree, crashes: list[str], script: tuple[list[bytes], list[tuple[Any, ...]]]) -> None:
    assigns, actions = script
    parent = subtree.parent
    parent.assign_first = assigns
    for action in actions:
        session = parent.sessions.get(subtree.top, 0)
        if action[0] == "frame":
            parent.send(subtree.top, encode_frame(action, session))
        elif action[0] == "raw":
            parent.send(subtree.top, action[1])
        else:
            parent.sock.send_multipart([subtree.top.encode(), *action[1]])
        parent.pump(0)
    subtree.healthy(crashes)


@pytest.mark.slow
@pytest.mark.parametrize("top", ["leaf", "relay"])
@LIVE
@given(script=parent_script())
def test_child_serves_on_whatever_its_parent_sends(subtree: Subtree, crashes: list[str], top: str,
                                                   script: tuple[list[bytes], list[tuple[Any, ...]]]) -> None:
    """Commands, status queries, keys, rejections and placements of any shape, and garbage, sent
    to a leaf, or to a relay that must still forward a real command to the leaf under it."""
    fuzz_parent(subtree, crashes, script)


# What the fuzzers found, pinned --------------------------------------------------------------


def test_route_entries_at_a_level_no_tree_has_are_refused() -> None:
    """An agent that claimed level 2**64-1 made the registrar place the next backend at 2**64,
    which ASSIGN cannot pack: every later JOIN went unanswered.  One that claimed level 0 or
    less, with a child below it, left the planner no parent above it when it joined again
    (min() of an empty pool)."""
    def entry(level: int) -> list[Any]:
        return ["fz", [1, 1], "root", int(Role.AGENT), level, "tcp://127.0.0.1:1", [], None]

    assert check_entries([entry(1), entry(3)])
    for level in (0, -1, 2**16 + 1, 2**63 - 1, 2**64 - 1):
        with pytest.raises(FrameError, match="level"):
            check_entries([entry(level)])


def test_a_status_reply_is_keyed_by_node_ids() -> None:
    """A bytes key made the root's report sort bytes with str: tree_status raised TypeError."""
    entry: list[Any] = [[], {}, {}]
    table: dict[Any, list[Any]] = {b"a1": entry, "a2": entry}
    assert valid_entries("fz", table) == {"a2": entry}


def test_leaf_counter_sums_stay_within_what_a_status_reply_may_carry() -> None:
    """Increments each within limits added up past them (more than 512 names, counts past 1e18),
    and the relay's whole status entry was then dropped at the root: it showed as silent."""
    total: dict[str, float] = {"op_count:ping": 3}
    for _ in range(3):
        add_into(total, check_counters({f"fz:{i}": 6 * 10**17 for i in range(MAX_KEYS)}))
    add_into(total, {"op_count:ping": 1})
    assert check_counters(total) is total and total["op_count:ping"] == 4 and len(total) == MAX_KEYS


def test_relay_refuses_odd_targets_and_cuts_long_ttls() -> None:
    """COMMAND targets that were not strings raised TypeError (unhashable) in the relay, and a
    ttl near 2**64 came out of the float arithmetic too big to pack for the children."""
    relay = Relay("r1", "tcp://127.0.0.1:1", "tcp://127.0.0.1:0", SETTINGS)
    try:
        relay.down.routes.add("c1", [["h1", [1, 1], "c1", int(Role.BACKEND), 2, None, [], None]])
        relay.on_parent_frame(Frame(Kind.COMMAND, 0, ["c", 1, "ping", b"", ["h1", ["x"]], 1000, 0]))
        assert not relay.gathers
        relay.on_parent_frame(Frame(Kind.COMMAND, 0, ["c", 1, "ping", b"", ["h1"], 2**64 - 1, 0]))
        assert relay.gathers[("c", 1)].deadline - time.monotonic() <= 86_400
        relay.on_parent_frame(Frame(Kind.STATUS, 0, ["q", 2**64 - 1]))
    finally:
        relay.reactor.close()


@pytest.mark.parametrize("curve", [False, True])
def test_uplink_drops_an_assign_it_cannot_use(curve: bool) -> None:
    """A parent that was a map raised KeyError, and an endpoint ZeroMQ refuses (or, with CURVE,
    a parent without a key) raised ZMQError out of the handler: the node then waited in limbo."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    reactor = Reactor()
    keys = KeyPair.generate()
    up = Uplink(reactor, ctx, "h1", Role.BACKEND, "tcp://127.0.0.1:1", SETTINGS, UplinkOwner(),
                security=Security(keys, keys.public) if curve else None)
    try:
        up.start()
        for parents in ([{"a": 1}], [["p", 5, None]], [["p", "tcp://127.0.0.1:1"]]):
            up._on_frame(Frame(Kind.ASSIGN, 0, [1, parents]))
            assert up.state is LinkState.JOINING
        bad = [["p", "garbage", None]] if not curve else [["p", "tcp://127.0.0.1:1", None]]
        up._on_frame(Frame(Kind.ASSIGN, 0, [1, bad]))
        assert up.state is LinkState.ATTACHING and up._sock is None  # the phase timeout moves it on
    finally:
        up.stop(say_bye=False)
        reactor.close()
        ctx.term()


def test_a_backend_claims_no_route_but_its_own(tree: Tree, crashes: list[str]) -> None:
    """A backend child whose HELLO carried h0's entry with a newer seq took h0's commands, and
    h0 stayed unreachable after the claimant was gone.  A backend has no subtree: such a HELLO,
    and any ROUTES from a backend, are refused."""
    child = tree.fuzzer("fz-root", "root")
    own = ["fz-root", [1, 1], "", int(Role.BACKEND), 1, None, [], None]
    stolen = ["h0", [2**63 - 1, 0], "fz-root", int(Role.BACKEND), 2, None, [], None]
    assert not child.attach([own, stolen])
    assert child.attach([own])
    child.send(proto.routes(child.session, [stolen], []))
    child.drain(100)
    tree.healthy(crashes)
