"""CurveZMQ on every link of the tree: key pairs, the enrolled keyring, and the ZAP check.

Every node has its own CURVE key pair.  A parent's socket is a CURVE server; each child
connects as a CURVE client that must know the parent's public key (the root's comes from the
node's config, the agents' come with ASSIGN from the root), so a child cannot be led to a
parent the root did not name.  A parent lets a child finish the handshake only if the child's
public key is enrolled (the ZAP handler below asks the node's ``Keyring``), and then checks
every frame's sender key (ZeroMQ's ``User-Id`` property) against the node id the frame claims,
so no enrolled node can speak for another.  The root alone accepts unknown keys at the
handshake, so that a new node can present its one-time enrolment token; until it is enrolled,
the only frame the root takes from it is ENROL.

Enrolled keys reach agents through the tree: the root sends a KEYS frame with the whole ring
to each agent child when it attaches, and changes (an enrolment, a revocation, a node's
route-signing key from its first JOIN) to every agent child as they happen; relays do the
same for agents below them.  The route-signing keys let every parent check the route claims
of its subtree (sci.claims).
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import structlog
import zmq
from zmq.utils import z85

from .claims import ClaimSigner
from .exceptions import SciError

__all__ = ["KeyPair", "Keyring", "Security", "SecurityError", "SignerKeeper", "check_key", "serve_curve",
           "connect_curve", "release_domain"]

log = structlog.get_logger("sci.security")

#: A CURVE key in Z85 text: 32 bytes as 40 characters.
KEY_CHARS = 40
_Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


class SecurityError(SciError):
    pass


def check_key(value: object, what: str = "key") -> str:
    """Return ``value`` if it is a Z85 CURVE public key, else raise SecurityError saying why.

    A pattern, not a decode: a relay checks a whole keyring of 10,000 keys when it attaches,
    and pure-Python Z85 decoding of each costs more than everything else it does then.  The
    rare string of Z85 characters that still does not decode (a 5-character group past 2**32)
    fails where it is used, at the handshake, like any wrong key.
    """
    if not isinstance(value, str) or not _Z85_KEY.fullmatch(value):
        raise SecurityError(f"{what} must be a {KEY_CHARS}-character Z85 CURVE key")
    return value


@dataclass(frozen=True)
class KeyPair:
    public: str
    secret: str = field(repr=False)

    @classmethod
    def generate(cls) -> "KeyPair":
        public, secret = zmq.curve_keypair()
        return cls(public.decode("ascii"), secret.decode("ascii"))

    @classmethod
    def load_or_create(cls, path: str | Path) -> "KeyPair":
        """This node's key pair from ``path``; made (mode 0600) if the file does not exist yet.

        A file that others may read is refused: whoever has the secret key can speak as this node.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls._load(path)
        pair = cls.generate()
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"public {pair.public}\nsecret {pair.secret}\n")
        log.info("key_pair_created", path=str(path), public=pair.public)
        return pair

    @classmethod
    def _load(cls, path: Path) -> "KeyPair":
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecurityError(f"{path}: the key file is open to other users (mode {stat.filemode(mode)}); "
                                f"chmod 600 it")
        fields = dict(line.split(" ", 1) for line in path.read_text(encoding="ascii").split("\n") if " " in line)
        try:
            public = check_key(fields.get("public"), f"{path}: public")
            secret = check_key(fields.get("secret"), f"{path}: secret")
        except SecurityError:
            raise
        if zmq.curve_public(secret.encode("ascii")).decode("ascii") != public:
            raise SecurityError(f"{path}: the public key does not belong to the secret key")
        return cls(public, secret)


class Keyring:
    """Enrolled nodes with their CURVE public keys and route-signing keys (sci.claims), and the
    CURVE keys revoked since.  Touched from the node's loop thread; the ZAP thread only reads
    it (single dict lookups)."""

    def __init__(self, keys: dict[str, str] | None = None, revoked: set[str] | None = None,
                 signers: dict[str, str] | None = None) -> None:
        self._by_node: dict[str, str] = {}
        self._by_key: dict[str, str] = {}
        self._signers: dict[str, str] = {}
        self.revoked: set[str] = set(revoked or ())
        self.replace(keys or {}, signers or {})

    def __len__(self) -> int:
        return len(self._by_node)

    def node_of(self, key: str | None) -> str | None:
        return self._by_key.get(key) if key is not None else None

    def key_of(self, node: str) -> str | None:
        return self._by_node.get(node)

    def sign_key_of(self, node: str) -> str | None:
        return self._signers.get(node)

    def add(self, node: str, key: str) -> None:
        old = self._by_node.get(node)
        if old is not None:
            self._by_key.pop(old, None)
            if old != key:
                self._signers.pop(node, None)  # a new CURVE secret brings a new signing key
        self._by_node[node] = key
        self._by_key[key] = node
        self.revoked.discard(key)

    def add_signer(self, node: str, sign_key: str) -> None:
        """``node``'s route-signing key; only for an enrolled node."""
        if node in self._by_node:
            self._signers[node] = sign_key

    def remove(self, node: str) -> str | None:
        key = self._by_node.pop(node, None)
        self._signers.pop(node, None)
        if key is not None:
            self._by_key.pop(key, None)
            self.revoked.add(key)
        return key

    def replace(self, keys: dict[str, str], signers: dict[str, str]) -> None:
        self._by_node = dict(keys)
        self._by_key = {key: node for node, key in keys.items()}
        self._signers = {node: key for node, key in signers.items() if node in self._by_node}

    def snapshot(self) -> dict[str, str]:
        return dict(self._by_node)

    def signers(self) -> dict[str, str]:
        return dict(self._signers)


#: (node_id, role, token, public key) -> None if enrolled, else the reason it was refused
Enroller = Callable[[str, int, str, str], "str | None"]
#: (node_id, its CURVE key, signing key): keep the signing key an enrolled node brought in its first JOIN
SignerKeeper = Callable[[str, str, str], None]


@dataclass
class Security:
    """What a node needs for CURVE and signed routes: its key pair (the route-signing key is
    derived from it), the root's public key and, at the root and at relays, the keyring of
    enrolled nodes (the root's owner fills it; relays get it by KEYS)."""

    keypair: KeyPair
    root_key: str
    keyring: Keyring = field(default_factory=Keyring)
    #: at the root only: checks an enrolment token
    enroller: Enroller | None = None
    #: at the root only: stores a signing key learned from a JOIN (called in a worker thread)
    signer_keeper: SignerKeeper | None = None
    signer: ClaimSigner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.signer = ClaimSigner(self.keypair.secret)


# ZAP ---------------------------------------------------------------------------------------
#
# libzmq asks one ZAP handler per context.  Several nodes may share a context (tests run whole
# trees in one process), so each server socket names its node as its ZAP domain and the
# handler asks that node's policy.  The handler is a plain thread on a blocking REP socket:
# pyzmq's ThreadAuthenticator runs an asyncio loop per request, which at 10,000 joining hosts
# cost the root a third of a core.

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_auth_lock = threading.Lock()
_handlers: dict[int, "_ZapHandler"] = {}


class _ZapHandler:
    """Answers the ZAP requests of one context until the context is terminated."""

    def __init__(self, ctx: Any) -> None:
        self._ctx_id = id(ctx)
        #: domain -> may this CURVE public key (Z85) finish the handshake?
        self.policies: dict[str, Callable[[str], bool]] = {}
        # Not through ctx.socket(): a context's destroy() would close it under the thread's
        # feet; term() instead wakes the thread with ETERM, and it closes its own socket.
        self._sock = zmq.Socket(ctx, zmq.REP)
        self._sock.linger = 0
        self._sock.bind(_ZAP_ENDPOINT)
        threading.Thread(target=self._serve, name="sci-zap", daemon=True).start()

    def _serve(self) -> None:
        sock = self._sock
        try:
            while True:
                sock.send_multipart(self._answer(sock.recv_multipart()))
        except zmq.ContextTerminated:
            return
        finally:
            sock.close()
            with _auth_lock:
                if _handlers.get(self._ctx_id) is self:
                    del _handlers[self._ctx_id]

    def _answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:
            request_id = request[1] if len(request) > 1 else b""
            return [b"1.0", request_id, b"400", b"malformed ZAP request", b"", b""]
        _version, request_id, domain, _address, _identity, mechanism = request[:6]
        if mechanism == b"NULL":
            return [b"1.0", request_id, b"200", b"OK", b"anonymous", b""]  # not a tree link
        if mechanism != b"CURVE" or len(request) != 7 or len(request[6]) != 32:
            return [b"1.0", request_id, b"400", b"only CURVE is served", b"", b""]
        key = z85.encode(request[6])
        text = key.decode("ascii")
        name = domain.decode("utf-8", "replace")
        allow = self.policies.get(name)
        if allow is not None and allow(text):
            return [b"1.0", request_id, b"200", b"OK", key, b""]
        log.warning("peer_refused", node=name, key=text, reason="key not enrolled or revoked")
        return [b"1.0", request_id, b"400", b"key not enrolled or revoked", b"", b""]


def _handler(ctx: Any) -> _ZapHandler:
    with _auth_lock:
        handler = _handlers.get(id(ctx))
        if handler is None:
            handler = _handlers[id(ctx)] = _ZapHandler(ctx)
        return handler


def serve_curve(sock: Any, ctx: Any, domain: str, security: Security, allow: Callable[[str], bool]) -> None:
    """Make ``sock`` a CURVE server whose peers ``allow(key)`` decides on (before bind)."""
    _handler(ctx).policies[domain] = allow
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, security.keypair.secret.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, security.keypair.public.encode("ascii"))


def release_domain(ctx: Any, domain: str, allow: Callable[[str], bool]) -> None:
    """Forget ``domain``'s policy, unless a newer node of the same name has since replaced it."""
    with _auth_lock:
        handler = _handlers.get(id(ctx))
        if handler is not None and handler.policies.get(domain) == allow:
            del handler.policies[domain]


def connect_curve(sock: Any, security: Security, server_key: str) -> None:
    """Make ``sock`` a CURVE client of the server whose public key is ``server_key`` (before connect)."""
    sock.setsockopt(zmq.CURVE_SECRETKEY, security.keypair.secret.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, security.keypair.public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
