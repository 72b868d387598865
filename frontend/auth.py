"""Who is calling: passwords, bearer tokens and roles.

Passwords are hashed with argon2id.  A token is 32 random bytes handed to the client once;
the database keeps only its SHA-256, which is enough to look it up and useless to a thief.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from .db.models import Organization, Token, User, utcnow
from .errors import Forbidden, Unauthenticated

__all__ = ["Caller", "Role", "authenticate", "hash_password", "issue_token", "login", "revoke_token"]

_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing of a wrong name
# and a wrong password the same, so names cannot be probed.
_DUMMY_HASH = _hasher.hash("not a password")


class Role(enum.IntEnum):
    """Ordered: each role may do what the ones below it may."""

    reader = 1
    member = 2
    tenant_admin = 3
    admin = 4

    @property
    def label(self) -> str:
        return self.name.replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> "Role":
        try:
            return cls[text.replace("-", "_")]
        except KeyError:
            raise ValueError(f"must be one of {', '.join(r.label for r in cls)}") from None


@dataclass(frozen=True)
class Caller:
    user_id: str
    user_name: str
    org_id: str
    role: Role
    token_id: str

    def require(self, role: Role, action: str) -> None:
        if self.role < role:
            raise Forbidden(f"{action} needs the {role.label} role; you are {self.role.label}")

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(session: Session, name: str, password: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None or user.status != "active":
        raise Unauthenticated("wrong user name or password")
    org = session.get(Organization, user.org_id)
    if org is None or org.status != "active":
        raise Unauthenticated("the user's organization is disabled")
    return user


def issue_token(session: Session, user: User, ttl: dt.timedelta) -> tuple[str, Token]:
    secret = secrets.token_urlsafe(32)
    token = Token(org_id=user.org_id, user_id=user.id, digest=_digest(secret), status="active",
                  expires_at=utcnow() + ttl)
    session.add(token)
    session.flush()
    return secret, token


def authenticate(session: Session, authorization: str | None) -> Caller:
    if not authorization:
        raise Unauthenticated("no token: send 'Authorization: Bearer <token>' (get one from POST /v1/tokens)")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    row = session.execute(
        select(Token, User, Organization.status).join(User, User.id == Token.user_id)
        .join(Organization, Organization.id == User.org_id).where(Token.digest == _digest(secret.strip()))
    ).one_or_none()
    if row is None:
        raise Unauthenticated("unknown token")
    token, user, org_status = row
    if token.status != "active":
        raise Unauthenticated("the token was revoked")
    if token.expires_at <= utcnow():
        raise Unauthenticated("the token has expired; get a new one from POST /v1/tokens")
    if user.status != "active":
        raise Unauthenticated("the user is disabled")
    if org_status != "active":
        raise Unauthenticated("the user's organization is disabled")
    return Caller(user.id, user.name, user.org_id, Role.parse(user.role), token.id)


def revoke_token(session: Session, token_id: str) -> None:
    token = session.get(Token, token_id)
    if token is not None:
        token.status = "revoked"
