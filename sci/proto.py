"""The tree's wire vocabulary: every frame that crosses a link is built and checked here.

A frame is one ZeroMQ message part holding a msgpack array::

    [VERSION, kind, session, *fields]

``session`` is the link session a child was given by its parent's WELCOME; frames going
up carry it so that a parent can refuse a child it has already declared dead (the child
then attaches again).  Frames going down and registrar frames carry 0.

``epoch`` (in COMMAND and WELCOME) is the root's fencing token: whoever runs the root raises
it each time a new root takes over (the frontend's leadership generation).  Every node keeps
the highest epoch it has seen and drops a COMMAND of a lower one, so a root that was replaced
(a leader paused past its lease, then woken) can no longer make any host act.

docs/protocol.md describes each kind; this module is the authority and the docs follow it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import msgpack

from .exceptions import FrameError

__all__ = [
    "VERSION",
    "MAX_FRAME_BYTES",
    "MAX_NODE_ID",
    "MAX_TOPIC",
    "MOVE_OP",
    "Kind",
    "Role",
    "RejectCode",
    "Frame",
    "NodeEntry",
    "check_node_id",
    "shown",
    "decode",
    "encode",
    "join",
    "assign",
    "hello",
    "welcome",
    "reject",
    "heartbeat_up",
    "heartbeat_down",
    "command",
    "results",
    "routes",
    "status",
    "status_reply",
    "bye",
    "notice",
    "counters",
    "enrol",
    "enrolled",
    "keys",
    "pack_body",
    "unpack_body",
]

VERSION: Final = 2
#: Default cap on one frame; a bigger frame is dropped with a log event.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
MAX_NODE_ID: Final = 64
#: A notice's topic names a kind of happening (``instance.power``), never data.
MAX_TOPIC: Final = 64
#: The tree's own op, in a COMMAND the root sends when it rebalances the tree (sci.rebalance):
#: {host: [level, [[parent_id, endpoint, public_key|None], ...]]}.  A leaf answers it, then
#: leaves its parent for the first one; relays carry it like any other command.
MOVE_OP: Final = "sci.move"
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class Kind(IntEnum):
    JOIN = 1  #: node -> registrar: [node_id, role, incarnation, endpoint|None, groups, signing key|None]
    ASSIGN = 2  #: registrar -> node: [level, [[parent_id, endpoint, public_key|None], ...]]
    HELLO = 3  #: child -> parent: [node_id, [NodeEntry, ...]]  (own entry first, then its subtree)
    WELCOME = 4  #: parent -> child: [session, epoch]
    REJECT = 5  #: parent -> child: [RejectCode, text, session refused (0 if none)]
    HEARTBEAT = 6  #: both ways: []
    COMMAND = 7  #: down: [cmd_id, wave, op, body, targets|None, ttl_ms, epoch]
    RESULTS = 8  #: up: [cmd_id, wave, {host: [status, data, exit_status]}]
    ROUTES = 9  #: up: [[NodeEntry, ...] added, [[node_id, seq], ...] removed]
    STATUS = 10  #: down: [query_id, ttl_ms]
    #: up: [query_id, {node_id: [[[child, role, heartbeat_age_ms], ...], own counters, its leaves' counters]}]
    STATUS_REPLY = 11
    BYE = 12  #: child -> parent: [] (leaving on purpose: no need to wait for heartbeats)
    COUNTERS = 13  #: leaf -> parent: [{name: increment since the last report}]
    ENROL = 14  #: new node -> registrar: [node_id, role, one-time token]
    ENROLLED = 15  #: registrar -> new node: [1 if enrolled else 0, text]
    #: parent -> agent child: [1 if the whole ring else 0, {node_id: public_key} added, [node_id removed],
    #: {node_id: signing key} added]
    KEYS = 16
    #: up, from a backend to the root: [origin node id, topic, body] (something that happened on the host)
    NOTICE = 17


class Role(IntEnum):
    AGENT = 1
    BACKEND = 2


class RejectCode(IntEnum):
    #: The parent has no live session for this child (it declared it dead, or restarted).
    NO_SESSION = 1
    #: This node does not take children of that kind (e.g. JOIN sent to a relay).
    NOT_HERE = 2
    #: The HELLO itself was unacceptable (bad id, cycle).
    REFUSED = 3


#: A node's place in the tree as routes carry it upward:
#: [node_id, seq, parent_id, role, level, endpoint|None, groups, signature|None]
#: ``seq`` orders a node's attachments: (incarnation_ns, counter).  The node signs the other
#: seven fields (sci.claims); the signature is None only in a tree without CURVE.
NodeEntry = list[Any]

# The exact types msgpack may decode each field to (after the 3-element head).  msgpack
# yields exact built-in types, so ``type(v) in allowed`` is both the check and the fast path
# (a bool is not accepted where an int is meant).
_STR: frozenset[type] = frozenset({str})
_INT: frozenset[type] = frozenset({int})
_LIST: frozenset[type] = frozenset({list})
_DICT: frozenset[type] = frozenset({dict})
_OPT_STR: frozenset[type] = frozenset({str, type(None)})
_OPT_LIST: frozenset[type] = frozenset({list, type(None)})
_BYTES: frozenset[type] = frozenset({bytes})

_SHAPES: dict[Kind, tuple[frozenset[type], ...]] = {
    Kind.JOIN: (_STR, _INT, _INT, _OPT_STR, _LIST, _OPT_STR),
    Kind.ASSIGN: (_INT, _LIST),
    Kind.HELLO: (_STR, _LIST),
    Kind.WELCOME: (_INT, _INT),
    Kind.REJECT: (_INT, _STR, _INT),
    Kind.HEARTBEAT: (),
    Kind.COMMAND: (_STR, _INT, _STR, _BYTES, _OPT_LIST, _INT, _INT),
    Kind.RESULTS: (_STR, _INT, _DICT),
    Kind.ROUTES: (_LIST, _LIST),
    Kind.STATUS: (_STR, _INT),
    Kind.STATUS_REPLY: (_STR, _DICT),
    Kind.BYE: (),
    Kind.COUNTERS: (_DICT,),
    Kind.ENROL: (_STR, _INT, _STR),
    Kind.ENROLLED: (_INT, _STR),
    Kind.KEYS: (_INT, _DICT, _LIST, _DICT),
    Kind.NOTICE: (_STR, _STR, _BYTES),
}
_KINDS = {int(k): k for k in Kind}


@dataclass(slots=True)
class Frame:
    kind: Kind
    session: int
    fields: list[Any]


def shown(value: object) -> str:
    """A peer's value for an error message: a scalar's repr cut short, else only its type (the
    repr of a container a peer nested 1000 deep raises RecursionError)."""
    if isinstance(value, (str, bytes)):
        return repr(value[:80])
    if value is None or isinstance(value, (int, float)):
        return repr(value)
    return type(value).__name__


def check_node_id(value: object) -> str:
    """Return ``value`` if it is a valid node id, else raise FrameError saying why."""
    if not isinstance(value, str) or not _NODE_ID.match(value):
        raise FrameError(f"node id {shown(value)} must be 1-{MAX_NODE_ID} characters of A-Z a-z 0-9 . _ -")
    return value


_local = threading.local()


def _pack(obj: Any) -> bytes:
    # msgpack.packb builds a Packer per call; a packer per thread is reused (packers are not
    # thread-safe, and the root packs in callers' threads as well as its own).
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    data: bytes = packer.pack(obj)
    return data


def encode(kind: Kind, session: int, *fields: Any) -> bytes:
    return _pack([VERSION, int(kind), session, *fields])


def decode(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """Decode and shape-check one frame; raise FrameError with the reason otherwise."""
    if len(data) > max_bytes:
        raise FrameError(f"frame of {len(data)} bytes is over the {max_bytes}-byte limit", reason="oversized")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise FrameError(f"undecodable frame: {exc}", reason="undecodable") from exc
    if type(obj) is not list or len(obj) < 3:
        raise FrameError("frame is not an array [version, kind, session, ...]", reason="malformed")
    version, kind_code, session = obj[0], obj[1], obj[2]
    if version != VERSION or type(version) is not int:
        raise FrameError(f"protocol version {shown(version)}, expected {VERSION}", reason="version")
    kind = _KINDS.get(kind_code) if type(kind_code) is int else None
    if kind is None:
        raise FrameError(f"unknown frame kind {shown(kind_code)}", reason="malformed")
    if type(session) is not int:
        raise FrameError("session must be an integer", reason="malformed")
    fields = obj[3:]
    shape = _SHAPES[kind]
    if len(fields) != len(shape):
        raise FrameError(f"{kind.name} takes {len(shape)} fields, got {len(fields)}", reason="malformed")
    for i, value in enumerate(fields):
        if type(value) not in shape[i]:
            raise FrameError(f"{kind.name} field {i} has type {type(value).__name__}", reason="malformed")
    return Frame(kind, session, fields)


# Builders: one per kind, so that no other module spells a frame's layout.


def join(node_id: str, role: Role, incarnation: int, endpoint: str | None, groups: list[str],
         sign_key: str | None) -> bytes:
    return encode(Kind.JOIN, 0, node_id, int(role), incarnation, endpoint, groups, sign_key)


def assign(level: int, parents: list[list[str | None]]) -> bytes:
    return encode(Kind.ASSIGN, 0, level, parents)


def hello(node_id: str, entries: list[NodeEntry]) -> bytes:
    return encode(Kind.HELLO, 0, node_id, entries)


def welcome(session: int, epoch: int) -> bytes:
    return encode(Kind.WELCOME, 0, session, epoch)


def reject(code: RejectCode, text: str, session: int = 0) -> bytes:
    return encode(Kind.REJECT, 0, int(code), text, session)


def heartbeat_up(session: int) -> bytes:
    return encode(Kind.HEARTBEAT, session)


HEARTBEAT_DOWN: Final = encode(Kind.HEARTBEAT, 0)


def heartbeat_down() -> bytes:
    return HEARTBEAT_DOWN


def command(cmd_id: str, wave: int, op: str, body: bytes, targets: list[str] | None, ttl_ms: int,
            epoch: int) -> bytes:
    return encode(Kind.COMMAND, 0, cmd_id, wave, op, body, targets, ttl_ms, epoch)


def results(session: int, cmd_id: str, wave: int, table: dict[str, list[Any]]) -> bytes:
    return encode(Kind.RESULTS, session, cmd_id, wave, table)


def routes(session: int, added: list[NodeEntry], removed: list[list[Any]]) -> bytes:
    return encode(Kind.ROUTES, session, added, removed)


def status(query_id: str, ttl_ms: int) -> bytes:
    return encode(Kind.STATUS, 0, query_id, ttl_ms)


def status_reply(session: int, query_id: str, table: dict[str, list[Any]]) -> bytes:
    return encode(Kind.STATUS_REPLY, session, query_id, table)


def bye(session: int) -> bytes:
    return encode(Kind.BYE, session)


def counters(session: int, increments: dict[str, float]) -> bytes:
    return encode(Kind.COUNTERS, session, increments)


def notice(session: int, origin: str, topic: str, body: bytes) -> bytes:
    return encode(Kind.NOTICE, session, origin, topic, body)


def enrol(node_id: str, role: Role, token: str) -> bytes:
    return encode(Kind.ENROL, 0, node_id, int(role), token)


def enrolled(ok: bool, text: str) -> bytes:
    return encode(Kind.ENROLLED, 0, int(ok), text)


def keys(whole: bool, added: dict[str, str], removed: list[str], signers: dict[str, str]) -> bytes:
    return encode(Kind.KEYS, 0, int(whole), added, removed, signers)


def pack_body(args: Any) -> bytes:
    """Encode a command's arguments once at the root; relays pass the bytes through untouched."""
    return _pack(args)


def unpack_body(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False)
    except Exception as exc:
        raise FrameError(f"undecodable command body: {exc}", reason="undecodable") from exc
