"""A node's CURVE identity in the tree: its key pair, the root's public key, and the one-time
enrolment that makes the root trust the node's key.

An admin issues an enrolment token (``clctl hypervisor enroll NAME``) that reads
``cl1.<secret>.<root public key>``: the secret proves to the root, once, that an admin lets this
node in; the root's key tells the node which root to trust, so a new node needs nothing else to
join securely.  After a successful enrolment the root's key is kept beside the node's key file
(``root.pub``), so later starts need no token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import structlog

from sci import KeyPair, Security, SecurityError
from sci.enrolment import enrol
from sci.proto import Role
from sci.security import check_key

from .config import TreeSection
from .files import write_atomic

__all__ = ["EnrolmentError", "EnrolmentToken", "node_security", "root_key_path"]

log = structlog.get_logger("service.nodekeys")

TOKEN_VERSION = "cl1"
#: what secrets.token_urlsafe makes
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,128}")


class EnrolmentError(Exception):
    """This node cannot take its place in the tree; the text says why and what to do."""


@dataclass(frozen=True)
class EnrolmentToken:
    secret: str = field(repr=False)
    root_key: str

    @classmethod
    def parse(cls, text: str) -> "EnrolmentToken":
        """Read a token as an admin copied it; the error never quotes the text (it may hold a secret)."""
        version, _, rest = text.strip().partition(".")
        # The secret has no dots; the root's key (Z85) may, so it is everything after the second one.
        secret, _, root_key = rest.partition(".")
        if version != TOKEN_VERSION or not _SECRET.fullmatch(secret):
            raise ValueError(f"not an enrolment token: one reads {TOKEN_VERSION}.<secret>.<root key>")
        try:
            check_key(root_key, "the token's root key")
        except SecurityError as exc:
            raise ValueError(f"not an enrolment token: {exc}") from None
        return cls(secret, root_key)

    def text(self) -> str:
        """The token as the operator copies it."""
        return f"{TOKEN_VERSION}.{self.secret}.{self.root_key}"


def root_key_path(key_path: Path) -> Path:
    """Where an enrolled node keeps the root's public key: beside its own key file."""
    return key_path.with_name("root.pub")


def node_security(node_id: str, role: Role, registrar: Sequence[str], tree: TreeSection, key_path: Path,
                  token_file: str) -> Security | None:
    """This agent's or backend's CURVE identity, enrolling it first if it never was.

    None when ``tree.curve`` is off.  Raises EnrolmentError if the node is not enrolled and
    cannot be (no token, or the root refused it): the daemon exits with the reason.
    """
    if not tree.curve:
        log.warning("tree_curve_disabled", node=node_id,
                    reason="tree.curve is false: links are in clear and any process that reaches a parent may join")
        return None
    try:
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        keypair = KeyPair.load_or_create(key_path)
    except SecurityError as exc:
        raise EnrolmentError(f"tree.key_file: {exc}") from None
    stored = root_key_path(key_path)
    if stored.exists():
        try:
            known = check_key(stored.read_text(encoding="ascii").strip(), str(stored))
        except (SecurityError, UnicodeDecodeError) as exc:
            raise EnrolmentError(f"{stored}: {exc}; delete it and enrol this node again") from None
        # An operator who moved the root to a new key pair says so in the config.
        return Security(keypair, tree.root_key or known)
    token = _read_token(node_id, role, token_file, stored)
    if tree.root_key and tree.root_key != token.root_key:
        raise EnrolmentError(f"enrolment_token_file: the token names another root key than tree.root_key "
                             f"({token.root_key} vs {tree.root_key}); it was issued by another frontend")
    security = Security(keypair, token.root_key)
    try:
        enrol(registrar, node_id, role, token.text(), security)
    except SecurityError as exc:
        log.error("node_enrolment_failed", node=node_id, registrar=registrar, reason=str(exc))
        raise EnrolmentError(str(exc)) from None
    write_atomic(stored, (token.root_key + "\n").encode("ascii"))  # half a key would stop every start
    log.info("node_enrolled", node=node_id, role=role.name.lower(), registrar=registrar, key=keypair.public,
             root_key=token.root_key, token_file=token_file)
    return security


def _read_token(node_id: str, role: Role, token_file: str, stored: Path) -> EnrolmentToken:
    if not token_file:
        flag = " --agent" if role is Role.AGENT else ""
        raise EnrolmentError(f"{node_id} is not enrolled in the tree ({stored} does not exist): ask an admin for "
                             f"a token (clctl hypervisor enroll {node_id}{flag}), write it to a file only this "
                             f"service can read and name that file in enrolment_token_file")
    try:
        text = Path(token_file).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not ASCII text"
        raise EnrolmentError(f"enrolment_token_file: cannot read {token_file}: {reason}") from None
    try:
        return EnrolmentToken.parse(text)
    except ValueError as exc:
        raise EnrolmentError(f"enrolment_token_file: {token_file}: {exc}") from None


