"""SSH keypairs: public keys that instances are booted with, for their users to log in."""

from __future__ import annotations

import base64
import binascii
import hashlib

from fastapi import APIRouter, status
from pydantic import Field, field_validator
from sqlalchemy import func, select

from ...auth import Role
from ...db.models import Instance, Keypair
from ...errors import Conflict
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned, unique_name
from ..schemas import V1, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["keypairs"])

MAX_PUBLIC_KEY = 16 * 1024
#: key type -> how many length-prefixed fields its blob holds after the type (RFC 4253, RFC 5656, RFC 8709)
_KEY_FIELDS = {"ssh-ed25519": 1, "ssh-rsa": 2, "ecdsa-sha2-nistp256": 2, "ecdsa-sha2-nistp384": 2,
               "ecdsa-sha2-nistp521": 2}
#: an uncompressed curve point: 0x04, then both coordinates
_EC_POINT_BYTES = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
# OpenSSH's own floor (RequiredRSASize): a shorter key would be refused at login anyway.
_RSA_MIN_BITS = 1024


def _fields(blob: bytes) -> list[bytes]:
    fields, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at:at + 4], "big")
        if at + 4 + size > len(blob):
            raise ValueError("the key data is truncated")
        fields.append(blob[at + 4:at + 4 + size])
        at += 4 + size
    return fields


def _blob(text: str) -> bytes:
    """The key blob of an OpenSSH public key line, ``<type> <base64> [comment]``; ValueError if malformed."""
    if not text.isprintable():
        raise ValueError("must be one line without control characters")
    kind, _, rest = text.partition(" ")
    if kind not in _KEY_FIELDS:
        raise ValueError(f"the key type must be one of {', '.join(_KEY_FIELDS)}")
    try:
        blob = base64.b64decode(rest.partition(" ")[0], validate=True)
    except binascii.Error:
        raise ValueError("the key is not valid base64") from None
    fields = _fields(blob)
    if not fields or fields[0] != kind.encode() or len(fields) != 1 + _KEY_FIELDS[kind]:
        raise ValueError(f"the key data does not hold a valid {kind} key")
    if kind == "ssh-ed25519" and len(fields[1]) != 32:
        raise ValueError("an ssh-ed25519 key is 32 bytes")
    if kind == "ssh-rsa" and int.from_bytes(fields[2], "big").bit_length() < _RSA_MIN_BITS:
        raise ValueError(f"an ssh-rsa key must have at least {_RSA_MIN_BITS} bits")
    if kind.startswith("ecdsa-"):
        curve = kind.rpartition("-")[2]
        if fields[1] != curve.encode() or len(fields[2]) != _EC_POINT_BYTES[curve] or fields[2][0] != 4:
            raise ValueError(f"the key data does not hold a valid {kind} key")
    return blob


def fingerprint(public_key: str) -> str:
    """As ``ssh-keygen -l`` shows it, so that users can match a key to theirs."""
    digest = hashlib.sha256(_blob(public_key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class KeypairCreate(Input):
    name: Name
    public_key: str = Field(max_length=MAX_PUBLIC_KEY, description="One line of an OpenSSH .pub file")

    @field_validator("public_key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        # A key pasted from a .pub file ends with its newline.
        value = value.strip()
        _blob(value)
        return value


class KeypairView(ResourceView):
    name: str
    public_key: str
    fingerprint: str


@router.post("/keypairs", status_code=status.HTTP_201_CREATED, response_model=KeypairView,
             summary="Import an SSH public key")
def create_keypair(body: KeypairCreate, caller: CallerDep, frontend: FrontendDep) -> Keypair:
    caller.require(Role.member, "importing a keypair")
    with frontend.db.transaction() as session:
        unique_name(session, Keypair, body.name, "keypair", org_id=caller.org_id)
        keypair = Keypair(org_id=caller.org_id, status="active", name=body.name, public_key=body.public_key,
                          fingerprint=fingerprint(body.public_key))
        session.add(keypair)
        session.flush()
        return keypair


@router.get("/keypairs", response_model=Items[KeypairView], summary="List your organization's keypairs")
def list_keypairs(caller: CallerDep, frontend: FrontendDep) -> Items[KeypairView]:
    with frontend.db.read() as session:
        rows = session.execute(owned(Keypair, caller).order_by(Keypair.name)).scalars()
        return Items(items=[KeypairView.model_validate(k) for k in rows])


@router.get("/keypairs/{keypair}", response_model=KeypairView, summary="Show a keypair by id or name")
def show_keypair(keypair: Ref, caller: CallerDep, frontend: FrontendDep) -> Keypair:
    with frontend.db.read() as session:
        return find(session, Keypair, keypair, caller, "keypair")


@router.delete("/keypairs/{keypair}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a keypair no instance uses")
def delete_keypair(keypair: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "deleting a keypair")
    with frontend.db.transaction() as session:
        row = find(session, Keypair, keypair, caller, "keypair")
        used = session.execute(select(func.count()).where(Instance.keypair_id == row.id)).scalar()
        if used:
            raise Conflict(f"{used} instances use this keypair")
        session.delete(row)
