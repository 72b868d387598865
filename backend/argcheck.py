"""Declared schemas of op arguments, checked by the registry before any handler runs.

The backend runs as root; a frame that reaches it must not reach a handler with arguments it
does not expect.  Each op declares a ``Record`` of its fields, each a ``Check``: the types,
ranges, lengths and characters it accepts.  Anything else is refused with an ``ArgError``
naming the field by its path from ``args`` (``args.instance.ports[0].mac``) and saying why.

- Nothing is coerced: "1" is not a number, 1.0 not a whole number, true not 1.
- Unknown keys are refused, not ignored; a key may be missing only if declared ``optional``,
  and null only if declared ``nullable``.
- Reasons never show a text value (it may be user data, a signed link, or megabytes long),
  nor an unknown key unless it looks like a field name; numbers and lengths are shown.
- Only the schema is walked: a value's nesting beyond what is declared is never looked at.

Written here rather than with pydantic (which the frontend has): no coercion to turn off,
messages in our words with the field's path and without the input echoed, and a hypervisor's
backend needs no web framework's dependencies.
"""

from __future__ import annotations

import abc
import ipaddress
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Mapping
from urllib.parse import urlsplit

__all__ = ["ArgError", "BOOL", "Bytes", "CIDR4", "Check", "FilePath", "IPV4", "Int", "Key", "ListOf", "MAC", "NAME", "Number",
           "OneOf", "Pattern", "Record", "SHA256", "Text", "UUID", "Url", "nullable", "optional"]

#: how an op's whole argument map is named in errors
ROOT = "args"
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")


class ArgError(Exception):
    """An argument that breaks its op's schema: ``field`` is its path, ``reason`` what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


_KINDS: dict[type, str] = {str: "text", bool: "a boolean", int: "a whole number", float: "a number",
                           dict: "a mapping", list: "a list", bytes: "bytes", type(None): "null"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _number(value: int | float) -> str:
    # Python's ints are unbounded in-process, and beyond ~4300 digits str() refuses them.
    if isinstance(value, int) and value.bit_length() > 64:
        return "a number beyond 64 bits"
    return repr(value)


def _unknown_key(key: Any) -> str:
    # A key that looks like a field name is shown (it is most likely a typo); any other may be anything.
    if isinstance(key, str) and _FIELD_NAME.fullmatch(key):
        return f"unknown key {key!r}"
    return "unknown key, not shown: not a field name"


class Check(abc.ABC):
    """The rule one value must follow."""

    __slots__ = ()

    @abc.abstractmethod
    def check(self, value: Any, where: str) -> None:
        """Raise ``ArgError`` naming ``where`` if ``value`` breaks the rule."""


@dataclass(frozen=True, slots=True)
class Int(Check):
    low: int
    high: int

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgError(where, f"must be a whole number, not {_kind(value)}")
        if not self.low <= value <= self.high:
            raise ArgError(where, f"must be a whole number from {self.low} to {self.high} (got {_number(value)})")


@dataclass(frozen=True, slots=True)
class Number(Check):
    """A whole or fractional number; NaN is in no range."""

    low: float
    high: float

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgError(where, f"must be a number, not {_kind(value)}")
        if not self.low <= value <= self.high:
            raise ArgError(where, f"must be a number from {self.low:g} to {self.high:g} (got {_number(value)})")


@dataclass(frozen=True, slots=True)
class Text(Check):
    """Free text of a bounded length, in characters."""

    max_len: int
    nonempty: bool = False
    #: no line breaks or other control characters: for a key line or a tag
    one_line: bool = False

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise ArgError(where, f"must be text, not {_kind(value)}")
        if len(value) > self.max_len:
            raise ArgError(where, f"must be at most {self.max_len} characters (got {len(value)})")
        if self.nonempty and not value:
            raise ArgError(where, "must not be empty")
        if self.one_line and not value.isprintable():
            raise ArgError(where, "must be one line without control characters")


@dataclass(frozen=True, slots=True)
class Bytes(Check):
    """Raw bytes of a bounded length: what a user typed into a console."""

    max_len: int

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bytes):
            raise ArgError(where, f"must be bytes, not {_kind(value)}")
        if len(value) > self.max_len:
            raise ArgError(where, f"must be at most {self.max_len} bytes (got {len(value)})")


@dataclass(frozen=True, slots=True)
class Pattern(Check):
    """Text that matches ``regex`` whole: an id, a name, a MAC, a checksum."""

    regex: re.Pattern[str]
    #: what a matching value is, for the reason: "not <what>"
    what: str
    #: checked first, so that a huge value is refused without being scanned
    max_len: int

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise ArgError(where, f"must be {self.what}, not {_kind(value)}")
        if len(value) > self.max_len:
            raise ArgError(where, f"not {self.what} (it has {len(value)} characters, at most {self.max_len})")
        if not self.regex.fullmatch(value):
            raise ArgError(where, f"not {self.what}")


@dataclass(frozen=True, slots=True)
class OneOf(Check):
    choices: tuple[str, ...]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str) or value not in self.choices:
            raise ArgError(where, f"must be one of {', '.join(self.choices)}")


@dataclass(frozen=True, slots=True)
class _IPv4(Check):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str) or len(value) > 15:
            raise ArgError(where, "not an IPv4 address")
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ArgError(where, "not an IPv4 address") from None


@dataclass(frozen=True, slots=True)
class _Bool(Check):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise ArgError(where, f"must be a boolean, not {_kind(value)}")


@dataclass(frozen=True, slots=True)
class _CIDR4(Check):
    """An IPv4 network in CIDR form, without host bits (10.0.0.0/24, not 10.0.0.1/24)."""

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str) or len(value) > 18:
            raise ArgError(where, "not an IPv4 CIDR like 10.0.0.0/24")
        try:
            ipaddress.IPv4Network(value)
        except ValueError:
            raise ArgError(where, "not an IPv4 CIDR like 10.0.0.0/24 (without host bits)") from None


# A host name or an IPv4 address; IPv6 literals are parsed instead.  Nothing else, so that any
# HTTP client reads the link as we do.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _is_host(host: str) -> bool:
    if ":" not in host:
        return _HOST.fullmatch(host) is not None
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return "%" not in host  # a zone id means nothing on another host


@dataclass(frozen=True, slots=True)
class Url(Check):
    """An http:// or https:// link to a named or numbered host, without credentials or spaces."""

    max_len: int = 4096

    def check(self, value: Any, where: str) -> None:
        reason = "not an http:// or https:// link"
        if not isinstance(value, str):
            raise ArgError(where, f"must be an http:// or https:// link, not {_kind(value)}")
        if len(value) > self.max_len:
            raise ArgError(where, f"{reason} (it has {len(value)} characters, at most {self.max_len})")
        if not value.isascii() or not value.isprintable() or " " in value:
            raise ArgError(where, f"{reason} (it holds spaces, control or non-ASCII characters)")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            raise ArgError(where, reason) from None
        if parts.scheme not in ("http", "https") or "@" in parts.netloc or not _is_host(parts.hostname or ""):
            raise ArgError(where, reason)


@dataclass(frozen=True, slots=True)
class FilePath(Check):
    """An absolute path that stays under one of ``roots``, judged by its text alone.

    Symbolic links are not followed: what a link under a root points to is the handler's business.
    """

    roots: tuple[str, ...]
    max_len: int = 4096

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise ArgError(where, f"must be a path, not {_kind(value)}")
        if len(value) > self.max_len:
            raise ArgError(where, f"must be a path of at most {self.max_len} characters (got {len(value)})")
        if not value.isprintable():
            raise ArgError(where, "must be a path without control characters")
        if not value.startswith("/"):
            raise ArgError(where, "must be an absolute path")
        if ".." in value.split("/"):
            raise ArgError(where, "must not climb out with '..'")
        if not any(PurePosixPath(value).is_relative_to(root) for root in self.roots):
            raise ArgError(where, f"must be a path under {' or '.join(self.roots)}")


@dataclass(frozen=True, slots=True)
class ListOf(Check):
    item: Check
    max_items: int

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise ArgError(where, f"must be a list, not {_kind(value)}")
        if len(value) > self.max_items:
            raise ArgError(where, f"must hold at most {self.max_items} items (got {len(value)})")
        for index, item in enumerate(value):
            self.item.check(item, f"{where}[{index}]")


@dataclass(frozen=True, slots=True)
class Key:
    """A field of a ``Record``: its check, and whether it may be missing or null."""

    check: Check
    required: bool = True
    nullable: bool = False


def optional(check: Check) -> Key:
    """A field that may be left out (never null: leave it out instead)."""
    return Key(check, required=False)


def nullable(check: Check) -> Key:
    """A field that is always there, but may be null."""
    return Key(check, nullable=True)


class Record(Check):
    """A mapping with exactly the declared keys: an op's arguments, or an object within them."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, Check | Key]) -> None:
        self.fields = {name: field if isinstance(field, Key) else Key(field) for name, field in fields.items()}

    def check(self, value: Any, where: str = ROOT) -> None:
        if not isinstance(value, dict):
            raise ArgError(where, f"must be a mapping, not {_kind(value)}")
        for key in value:
            if key not in self.fields:
                raise ArgError(where, _unknown_key(key))
        for name, field in self.fields.items():
            path = f"{where}.{name}"
            if name not in value:
                if field.required:
                    raise ArgError(path, "missing")
                continue
            item = value[name]
            if item is None and field.nullable:
                continue
            field.check.check(item, path)


#: The name of any resource, as the API allows it (``frontend/api/schemas.py``): safe in a file
#: name, a log line and a host name; never a path.
NAME = Pattern(re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
               "a name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", 64)
#: Every id the frontend makes (``frontend/db/models.py``: ``str(uuid.uuid4())``).
UUID = Pattern(re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "a lowercase UUID", 36)
MAC = Pattern(re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"), "a MAC address like 52:54:00:12:34:56", 17)
SHA256 = Pattern(re.compile(r"[0-9a-f]{64}"), "a sha256 in lowercase hex", 64)
IPV4 = _IPv4()
CIDR4 = _CIDR4()
BOOL = _Bool()
