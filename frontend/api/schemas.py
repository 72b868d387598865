"""Shapes shared by every resource's request and response bodies."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

__all__ = ["V1", "IPv4", "Input", "Items", "Name", "Ref", "ResourceView", "Size"]

#: every path of this version of the API starts with it
V1 = "/v1"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


#: The name of any resource: safe in a file name, a log line and a domain name.
Name = Annotated[str, AfterValidator(_check_name), WithJsonSchema({
    "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "maxLength": 64,
    "description": "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"})]
#: A reference to another resource by its id or its name.
Ref = Annotated[str, Field(min_length=1, max_length=64)]
Size = Annotated[int, Field(ge=1, le=1 << 20)]


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


class ResourceView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime


T = TypeVar("T")


class Items(BaseModel, Generic[T]):
    items: list[T]
