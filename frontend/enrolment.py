"""Which nodes may be in the tree: one-time enrolment tokens, the keys they let in, revocation.

An admin issues a token for one node name and role; the new node presents it once, over a
CURVE link to the root, and the root asks ``redeem`` (its enroller, on a thread of its own
beside the tree's) whether to enrol the node's key.  Revoking a node marks its key revoked here and has the root
cut it off at once, at every agent too.  At start-up the root's keyring is loaded from here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sci import KeyPair, Keyring, Security, TreeRoot
from sci.proto import Role
from service.config import FrontendConfig
from service.nodekeys import EnrolmentToken

from .bootstrap import admin_org_id
from .db import Database
from .db.engine import changed
from .db.models import Enrolment, Event, Hypervisor, NodeKey, utcnow
from .errors import Conflict, Invalid, NotFound

__all__ = ["MAX_TTL_S", "EnrolmentState", "Issued", "is_revoked", "issue", "keep_sign_key", "load_keyring", "redeem",
           "reload_keyring", "revoke", "root_security", "state_of"]

log = structlog.get_logger("frontend.enrolment")

MAX_TTL_S = 7 * 86400
#: the roles a token can enrol, by the tree's role codes
_ROLES = {int(Role.AGENT): "agent", int(Role.BACKEND): "backend"}


@dataclass(frozen=True)
class Issued:
    enrolment: Enrolment
    #: ``cl1.<secret>.<root key>``: shown to the admin once, never stored or logged
    token: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


EnrolmentState = Literal["pending", "used", "expired"]


def state_of(enrolment: Enrolment, now: dt.datetime) -> EnrolmentState:
    if enrolment.used_at is not None:
        return "used"
    return "expired" if enrolment.expires_at <= now else "pending"


def issue(db: Database, root_key: str, root_node_id: str, name: str, role: str, ttl_s: int,
          created_by: str) -> Issued:
    """A new token that enrols ``name`` as ``role`` (agent or backend) once, within ``ttl_s`` seconds."""
    if name == root_node_id:
        raise Invalid(f"{name!r} is the frontend's own node id", "name")
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    with db.transaction() as session:
        key = session.execute(select(NodeKey).where(NodeKey.node_id == name)).scalar_one_or_none()
        if key is not None and key.revoked_at is None:
            raise Conflict(f"{name} is enrolled already (since {key.enrolled_at:%Y-%m-%d %H:%M:%S} UTC); revoke it "
                           f"first to enrol it again, e.g. after a reinstall")
        row = Enrolment(name=name, role=role, token_hash=_digest(secret), created_at=now,
                        expires_at=now + dt.timedelta(seconds=ttl_s), created_by=created_by)
        session.add(row)
    log.info("enrolment_issued", enrolment=row.id, name=name, role=role, expires_at=row.expires_at.isoformat(),
             by=created_by)
    return Issued(row, EnrolmentToken(secret, root_key).text())


def redeem(db: Database, node_id: str, role_code: int, token: str, key: str) -> str | None:
    """The root's enroller: None if ``node_id`` is now enrolled with ``key``, else why not.

    Runs on the root's enrolment thread, one enrolment at a time, so a database lock it waits
    on never stalls the tree; a failure it raises is answered as "try again".  No reason it
    gives quotes the token.
    """
    role = _ROLES.get(role_code, "?")  # the root let only agents and backends through
    try:
        secret = EnrolmentToken.parse(token).secret
    except ValueError as exc:
        return _refused(node_id, role, None, "malformed", str(exc))
    try:
        with db.transaction() as session:
            row = session.execute(select(Enrolment).where(Enrolment.token_hash == _digest(secret))
                                  .with_for_update()).scalar_one_or_none()
            if row is None:
                return _refused(node_id, role, None, "unknown",
                                "unknown enrolment token: it was mistyped, or another cloud issued it")
            held = session.execute(select(NodeKey).where(NodeKey.node_id == node_id)).scalar_one_or_none()
            if held is not None and held.revoked_at is None and held.public_key == key and \
                    row.used_at is not None and held.enrolled_at == row.used_at:
                # This token enrolled this very key, and the answer was lost: the node asks again.
                log.info("enrolment_token_redeemed", enrolment=row.id, node=node_id, role=role, key=key, again=True)
                return None
            refusal = _check(session, row, node_id, role, key, held)
            if refusal is not None:
                return _refused(node_id, role, row.id, *refusal)
            _enrol(session, db, row, held, node_id, role, key)
    except Exception:  # the root's loop runs this: a failure here must be a refusal, not a stopped tree
        log.exception("enrolment_token_refused", node=node_id, role=role, reason="internal")
        return "the frontend could not record the enrolment (its log says why); try again"
    log.info("enrolment_token_redeemed", enrolment=row.id, node=node_id, role=role, key=key)
    return None


def _check(session: Session, row: Enrolment, node_id: str, role: str, key: str,
           held: NodeKey | None) -> tuple[str, str] | None:
    """(code, reason) if the token cannot enrol ``node_id`` with ``key`` now."""
    now = utcnow()
    if row.name != node_id:
        return "wrong_name", f"this token enrols {row.name!r}, not {node_id!r}"
    if row.role != role:
        return "wrong_role", f"this token enrols {row.name} with role {row.role}, not {role}"
    if row.used_at is not None:
        return "used", (f"this token was used already (at {row.used_at:%Y-%m-%d %H:%M:%S} UTC); ask an admin for a "
                        f"new one")
    if row.expires_at <= now:
        return "expired", f"this token expired at {row.expires_at:%Y-%m-%d %H:%M:%S} UTC; ask an admin for a new one"
    if held is not None and held.revoked_at is None:
        return "enrolled", f"{node_id} is enrolled already; an admin must revoke it before it can enrol again"
    owner = session.execute(select(NodeKey.node_id).where(NodeKey.public_key == key)).scalar_one_or_none()
    if owner is not None and owner != node_id:
        return "key_taken", "this public key belongs to another node; make a new key pair for this one"
    return None


def _enrol(session: Session, db: Database, row: Enrolment, held: NodeKey | None, node_id: str, role: str,
           key: str) -> None:
    now = utcnow()
    row.used_at = now
    if held is None:
        session.add(NodeKey(node_id=node_id, role=role, public_key=key, enrolled_at=now))
    else:
        held.role, held.public_key, held.enrolled_at, held.revoked_at = role, key, now, None
        held.sign_key = None  # the new key pair brings its own, with its first JOIN
    session.add(Event(org_id=admin_org_id(db), kind=f"{_kind(role)}.enrolled", host=node_id,
                      resource_type="tree_node", message=f"{role} {node_id} enrolled its key {key}"))


def _refused(node_id: str, role: str, enrolment: str | None, code: str, reason: str) -> str:
    log.warning("enrolment_token_refused", node=node_id, role=role, enrolment=enrolment, reason=code)
    return reason


def _kind(role: str) -> str:
    return "host" if role == "backend" else "agent"


def revoke(db: Database, tree: TreeRoot, name: str, by: str) -> NodeKey:
    """Refuse ``name``'s key from now on, and cut it off; a hypervisor of that name is disabled too."""
    now = utcnow()
    with db.transaction() as session:
        row = session.execute(select(NodeKey).where(NodeKey.node_id == name).with_for_update()).scalar_one_or_none()
        if row is None:
            raise NotFound("enrolled node", name)
        first = row.revoked_at is None
        if first:
            row.revoked_at = now
            session.add(Event(org_id=admin_org_id(db), kind=f"{_kind(row.role)}.revoked", host=name,
                              resource_type="tree_node", message=f"{row.role} {name}: key revoked by an admin"))
        session.execute(update(Hypervisor).where(Hypervisor.name == name).values(enabled=False))
    cut_off = tree.revoke(name)
    log.warning("node_key_revoked", node=name, role=row.role, key=row.public_key, by=by, again=not first,
                cut_off=cut_off)
    return row


def is_revoked(session: Session, node_id: str) -> bool:
    """Whether ``node_id``'s key is revoked: the node never attaches again (enrolled anew, it is a new
    node with nothing of the old one's), so what the state holds on it can be forgotten without it."""
    return session.execute(select(NodeKey.revoked_at).where(NodeKey.node_id == node_id)).scalar() is not None


def load_keyring(db: Database) -> Keyring:
    """The enrolled keys, their route-signing keys and the revoked keys, as the root starts with them."""
    with db.read() as session:
        rows = session.execute(select(NodeKey.node_id, NodeKey.public_key, NodeKey.revoked_at,
                                      NodeKey.sign_key)).all()
    return Keyring({node: key for node, key, revoked, _sign in rows if revoked is None},
                   {key for _node, key, revoked, _sign in rows if revoked is not None},
                   {node: sign for node, _key, revoked, sign in rows if revoked is None and sign is not None})


def keep_sign_key(db: Database, node_id: str, key: str, sign_key: str) -> None:
    """Record the route-signing key ``node_id`` brought in its first JOIN under CURVE key ``key``
    (the root's loop hands it over; a later enrolment with another key never gets it)."""
    with db.transaction() as session:
        kept = changed(session, update(NodeKey).where(NodeKey.node_id == node_id, NodeKey.public_key == key,
                                                      NodeKey.revoked_at.is_(None), NodeKey.sign_key.is_(None))
                       .values(sign_key=sign_key))
    log.info("node_sign_key_kept", node=node_id, sign_key=sign_key, kept=bool(kept))


def reload_keyring(db: Database, keyring: Keyring) -> None:
    """Bring ``keyring`` to what the database holds: a standby built its root long before it leads,
    and nodes enrolled or revoked through the leader meanwhile."""
    fresh = load_keyring(db)
    keyring.replace(fresh.snapshot(), fresh.signers())
    keyring.revoked = fresh.revoked
    log.info("tree_keyring_reloaded", enrolled=len(keyring), revoked=len(keyring.revoked))


def root_security(config: FrontendConfig, db: Database) -> Security | None:
    """The root's CURVE identity (made on the first start) and keyring; None if tree.curve is off."""
    if not config.tree.curve:
        log.warning("tree_curve_disabled", reason="tree.curve is false: the tree's links are in clear and any "
                                                  "process that reaches its port may join and take commands")
        return None
    path = config.key_path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keypair = KeyPair.load_or_create(path)
    keyring = load_keyring(db)
    log.info("tree_keyring_loaded", key=keypair.public, enrolled=len(keyring), revoked=len(keyring.revoked))
    return Security(keypair, keypair.public, keyring,
                    enroller=lambda node_id, role, token, key: redeem(db, node_id, role, token, key),
                    signer_keeper=lambda node_id, key, sign_key: keep_sign_key(db, node_id, key, sign_key))
