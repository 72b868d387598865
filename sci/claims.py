"""Route claims no relay can forge: each node signs its own route entry, every parent checks.

A route entry travels up from the node it names through every relay above it, and each of
them routes that node's commands by it.  CURVE proves only who sent a frame, and a relay sends
its whole subtree's entries: without more, a compromised agent could announce another host's
entry at a higher ``seq`` and take its commands.  So every node signs its own entry when it
attaches (Ed25519 over everything but the signature), and a parent takes an entry only if

* the node's signing key, enrolled beside its CURVE key, verifies the signature: nobody but the
  node can make a claim for it, nor raise its ``seq``; and
* the entry's parent is the child it came from or a node routed through that child: a relay
  cannot replay a claim it once carried after the node (or a relay above it) moved elsewhere,
  because the claim names a parent that is no longer below it.

The signing key is derived from the node's CURVE secret, so a node has one key file as before.
Its public half reaches the root in the node's JOIN, which only the enrolled CURVE key can
send: the one-time token that enrolled the CURVE key vouches for it too.

An entry whose signing key has not reached this node yet (the KEYS push racing the node's
first attach) or whose parent has not been announced yet waits, per child, and is taken when
the key or the parent comes.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Callable, Iterable

import msgpack
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from zmq.utils import z85

from .counters import Counters
from .proto import NodeEntry
from .routes import RouteTable

__all__ = ["ClaimChecker", "ClaimSigner", "SIGNATURE_BYTES", "claim_bytes"]

log = structlog.get_logger("sci.claims")

SIGNATURE_BYTES = 64
#: Separates these signatures from anything else the same key could ever sign.
_CONTEXT = b"cloudland route claim"
#: Entries waiting for a key or a parent, per child; past it the oldest is dropped (and logged).
_WAITING_MAX = 65536
#: Verified (signature, claim) pairs remembered: a subtree re-attaching elsewhere brings the
#: same signed entries again, and checking each costs more than the rest of its handling.
_VERIFIED_KEPT = 65536


def claim_bytes(entry: NodeEntry) -> bytes:
    """What a node signs: its entry without the signature, under a fixed context."""
    data: bytes = msgpack.packb([_CONTEXT, *entry[:7]], use_bin_type=True)
    return data


class ClaimSigner:
    """A node's signing key, derived from its CURVE secret (Z85)."""

    def __init__(self, curve_secret: str) -> None:
        seed = hashlib.blake2b(z85.decode(curve_secret.encode("ascii")), digest_size=32,
                               person=b"cloudland.routes").digest()
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        #: the public half in Z85, 40 characters like a CURVE key
        self.public: str = z85.encode(raw).decode("ascii")

    def sign(self, entry: NodeEntry) -> NodeEntry:
        """``entry`` with its signature in place (the 8th field)."""
        entry[7] = self._key.sign(claim_bytes(entry))
        return entry


class ClaimChecker:
    """A parent's check of the entries its children announce (see the module's rules).

    ``sign_key_of`` is the keyring's lookup (node -> signing key or None); ``routes`` is this
    node's table, asked which child a claimed parent is routed through.
    """

    def __init__(self, node_id: str, sign_key_of: Callable[[str], str | None], routes: RouteTable,
                 counters: Counters) -> None:
        self.node_id = node_id
        self._sign_key_of = sign_key_of
        self._routes = routes
        self._counters = counters
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        self._verified: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        #: child -> (its session, {node: entry waiting})
        self._waiting: dict[str, tuple[int, dict[str, NodeEntry]]] = {}
        self._log = log.bind(node=node_id)

    def take(self, child: str, session: int, entries: Iterable[NodeEntry]) -> list[NodeEntry]:
        """The entries of ``entries`` to route through ``child`` now; the others wait or are refused."""
        held = self._waiting.get(child)
        if held is None or held[0] != session:
            held = (session, {})
            self._waiting[child] = held
        waiting = held[1]
        for entry in entries:
            waiting.pop(entry[0], None)
            waiting[entry[0]] = entry
        taken = self._settle(child, waiting)
        if len(waiting) > _WAITING_MAX:
            for node in list(waiting)[:len(waiting) - _WAITING_MAX]:
                del waiting[node]
            self._counters.add("routes_dropped:waiting")
            self._log.warning("route_claims_dropped", child=child, reason="too many waiting", kept=_WAITING_MAX)
        if not waiting:
            del self._waiting[child]
        return taken

    def withdrawn(self, child: str, nodes: Iterable[str]) -> None:
        """``child`` removed routes: entries of those nodes still waiting are void."""
        held = self._waiting.get(child)
        if held is not None:
            for node in nodes:
                held[1].pop(node, None)

    def forget(self, child: str) -> None:
        """``child`` is gone: nothing it announced may be taken any more."""
        self._waiting.pop(child, None)

    def keys_changed(self, nodes: Iterable[str] | None) -> dict[str, list[NodeEntry]]:
        """The keys of ``nodes`` (None: of any node) came, changed or went: the entries that can
        now be taken, by child."""
        changed = None if nodes is None else set(nodes)
        if changed is None or not changed.isdisjoint(self._keys):
            # A key that changed or went: what it verified proves nothing any more.
            self._verified.clear()
            self._keys = {} if changed is None else {n: k for n, k in self._keys.items() if n not in changed}
        taken: dict[str, list[NodeEntry]] = {}
        for child, (_session, waiting) in list(self._waiting.items()):
            if changed is None or not changed.isdisjoint(waiting):
                got = self._settle(child, waiting)
                if got:
                    taken[child] = got
                if not waiting:
                    del self._waiting[child]
        return taken

    def _settle(self, child: str, waiting: dict[str, NodeEntry]) -> list[NodeEntry]:
        """Take every waiting entry whose claim holds, parents before their children."""
        taken: list[NodeEntry] = []
        through = self._routes.child_of
        accepted: set[str] = set()
        progress = True
        while progress and waiting:
            progress = False
            for node, entry in list(waiting.items()):
                parent = entry[2]
                if node == child:
                    placed = parent == self.node_id
                else:
                    placed = parent == child or parent in accepted or through(parent) == child
                if not placed:
                    continue
                verdict = self._verify(entry)
                if verdict is None:
                    continue  # no key yet: waits for KEYS
                del waiting[node]
                if verdict:
                    taken.append(entry)
                    accepted.add(node)
                    progress = True
                else:
                    self._counters.add("routes_refused:forged")
                    self._log.warning("route_claim_refused", child=child, claimed=node, reason="bad signature")
        return taken

    def _verify(self, entry: NodeEntry) -> bool | None:
        """True if the node's key verifies the entry, False if it does not, None if no key is known."""
        node = entry[0]
        key_text = self._sign_key_of(node)
        if key_text is None:
            return None
        signature = entry[7]
        if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
            return False
        claim = claim_bytes(entry)
        memo = signature + claim
        if memo in self._verified:
            return True
        cached = self._keys.get(node)
        if cached is None or cached[0] != key_text:
            try:
                cached = (key_text, Ed25519PublicKey.from_public_bytes(z85.decode(key_text.encode("ascii"))))
            except ValueError:  # Z85-shaped but not a key: nothing it could verify
                return False
            self._keys[node] = cached
        try:
            cached[1].verify(signature, claim)
        except InvalidSignature:
            return False
        self._verified[memo] = None
        if len(self._verified) > _VERIFIED_KEPT:
            self._verified.popitem(last=False)
        return True
