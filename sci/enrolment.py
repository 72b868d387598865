"""A new node's first contact: trade a one-time enrolment token for a place in the keyring.

The node connects to the root's registrar as a CURVE client (so the token travels encrypted,
to the root whose public key came with the token) with the key pair it will use from then on,
and sends ENROL.  The root's owner checks the token; on success the node's public key is
enrolled and the node joins the tree as usual.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import zmq

from . import proto
from .exceptions import FrameError
from .proto import Kind, Role
from .security import Security, SecurityError, connect_curve

__all__ = ["enrol"]


def enrol(registrar: str | Sequence[str], node_id: str, role: Role, token: str, security: Security,
          timeout: float = 15.0, ctx: Any = None) -> None:
    """Enrol this node's key with the root; raise SecurityError with the root's reason if refused.

    With several registrars (standby frontends), a copy goes to each: only the one running the
    root listens, and the others' copies wait unsent until this socket closes.
    """
    proto.check_node_id(node_id)
    registrars = [registrar] if isinstance(registrar, str) else list(registrar)
    sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        connect_curve(sock, security, security.root_key)
        for address in registrars:
            sock.connect(address)
        for _ in registrars:
            sock.send(proto.enrol(node_id, role, token))
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000)):
                raise SecurityError(f"no answer from {', '.join(registrars)} in {timeout:.0f}s: is the frontend there, and is "
                                    f"the root key in the token the one it uses?")
            try:
                frame = proto.decode(sock.recv())
            except FrameError:
                continue
            if frame.kind is Kind.ENROLLED:
                ok, text = frame.fields
                if not ok:
                    raise SecurityError(f"enrolment refused: {text}")
                return
    finally:
        sock.close(linger=0)
