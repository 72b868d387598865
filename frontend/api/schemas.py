"""Shapes shared by every resource's request and response bodies."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

__all__ = ["V1", "ErrorView", "IPv4", "Input", "Items", "MemoryMb", "Moment", "Name", "Ref", "ResourceView", "Sha256",
           "Size", "Text", "UtcTime"]

#: every path of this version of the API starts with it
V1 = "/v1"

_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(_NAME_PATTERN)
_NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def _check_ref(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"must be an id or a name: {_NAME_RULE}")
    return value


#: The name of any resource: safe in a file name, a log line and a domain name.
Name = Annotated[str, AfterValidator(_check_name), WithJsonSchema({
    "type": "string", "pattern": _NAME_PATTERN, "maxLength": 64, "description": _NAME_RULE})]
#: A reference to another resource by its id or its name, in a path, a query or a body.  Ids (and
#: floating IPs' addresses) have the form of names, so anything else names nothing and is refused
#: before it reaches a query: PostgreSQL cannot even compare a text holding NUL.
Ref = Annotated[str, AfterValidator(_check_ref), WithJsonSchema({
    "type": "string", "pattern": _NAME_PATTERN, "maxLength": 64, "description": f"an id or a name: {_NAME_RULE}"})]
Size = Annotated[int, Field(ge=1, le=1 << 20)]
#: An amount of memory, as a flavor has it and an image may need it.
MemoryMb = Annotated[int, Field(ge=64, le=16 * 1024 * 1024)]

_SHA256_RULE = "64 hexadecimal characters (sha256)"
_SHA256 = re.compile("[0-9a-fA-F]{64}")


def _check_sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError(_SHA256_RULE)
    return value.lower()


#: A sha256 digest in hex, of either case; kept in lowercase, as hashlib writes it.
Sha256 = Annotated[str, AfterValidator(_check_sha256), WithJsonSchema({
    "type": "string", "pattern": "^" + _SHA256.pattern + "$", "description": _SHA256_RULE})]


def _check_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be Unicode text: it holds an unpaired surrogate") from None
    return value


#: Free text (a description, user data), kept as given; its length is capped where it is used.
#: What no database text can hold is refused: NUL, and the unpaired surrogates that JSON's \u
#: escapes can make (pydantic lets them through an optional field).
Text = Annotated[str, AfterValidator(_check_text), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})]


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def _iso_utc(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


#: A moment in a response: the database's naive UTC, written with its zone (``...Z``) so that
#: no client takes it for its own local time.
Moment = Annotated[dt.datetime, PlainSerializer(_iso_utc, return_type=str, when_used="json"),
                   WithJsonSchema({"type": "string", "format": "date-time"})]

#: A moment as the database holds it: naive UTC.  One with an offset is converted (naive ones
#: are taken as UTC already); a moment whose conversion leaves years 1-9999 is refused.
UtcTime = Annotated[dt.datetime, AfterValidator(_utc)]


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


#: An IPv4 address in dotted-quad form.
IPv4 = Annotated[str, AfterValidator(_ipv4)]



class Input(BaseModel):
    """A request body: unknown fields are refused, not ignored, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    #: machine-readable: invalid, unauthenticated, forbidden, not_found, conflict, ... (see frontend/errors.py)
    code: str
    #: for people: the field, if any, and the reason
    message: str
    #: the request's field at fault (``nics[1].ip``), if one is
    field: str | None
    reason: str


class ErrorView(BaseModel):
    """Every refusal and failure the API answers with."""

    error: ErrorDetail


class ResourceView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    status: str
    created_at: Moment
    updated_at: Moment


T = TypeVar("T")


class Items(BaseModel, Generic[T]):
    items: list[T]
