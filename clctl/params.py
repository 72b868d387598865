"""Option values that are more than a word: ``--nic network=n1,ip=10.0.0.5``, ``--quota vcpus=8``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import sys
from typing import Any, ClassVar

import click

__all__ = ["ADDRESS_RANGE", "DURATION", "NIC", "PORT_RANGE", "PROTOCOL", "QUOTA", "SINCE", "read_password"]


class Nic(click.ParamType):
    """``network=NET|subnet=S|port=P[,ip=A.B.C.D]`` -> ``{"network": NET, "ip": ...}``."""

    name = "nic"
    TARGETS = ("network", "subnet", "port")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, str]:
        if isinstance(value, dict):
            return value
        nic: dict[str, str] = {}
        for part in str(value).split(","):
            key, sep, item = part.partition("=")
            key = key.strip()
            if not sep or not item or key not in (*self.TARGETS, "ip"):
                self.fail(f"{part!r} is not network=, subnet=, port= or ip=VALUE", param, ctx)
            if key in nic:
                self.fail(f"{key} given twice in {value!r}", param, ctx)
            nic[key] = item.strip()
        if sum(k in nic for k in self.TARGETS) != 1:
            self.fail(f"{value!r} must name exactly one of network=, subnet= or port=", param, ctx)
        return nic


class Quota(click.ParamType):
    """``NAME=N`` or ``NAME=unlimited`` -> ``(NAME, N or None)``."""

    name = "quota"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, int | None]:
        if isinstance(value, tuple):
            return value
        key, sep, amount = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not NAME=N (e.g. instances=10, or vcpus=unlimited)", param, ctx)
        if amount.lower() in ("unlimited", "none"):
            return key, None
        if not amount.isdigit():
            self.fail(f"{value!r}: the amount must be a whole number or 'unlimited'", param, ctx)
        return key, int(amount)


class Protocol(click.ParamType):
    """``tcp``, ``udp``, ``icmp``, ``any``, or an IP protocol number (an int)."""

    name = "protocol"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | int:
        if value in ("tcp", "udp", "icmp", "any"):
            return str(value)
        if isinstance(value, str) and value.isdigit() and int(value) <= 255:
            return int(value)
        self.fail("tcp, udp, icmp, any, or an IP protocol number from 0 to 255", param, ctx)


PROTOCOL = Protocol()


class PortRange(click.ParamType):
    """``1000-2000`` -> ``(1000, 2000)``."""

    name = "range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", str(value))
        if not match or not 1 <= int(match[1]) <= int(match[2]) <= 65535:
            self.fail(f"{value!r} is not a range of ports like 1000-2000", param, ctx)
        return int(match[1]), int(match[2])


class AddressRange(click.ParamType):
    """``10.0.0.100-10.0.0.200`` -> ``{"start": "10.0.0.100", "end": "10.0.0.200"}``, as the API takes a pool."""

    name = "address range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, str]:
        if isinstance(value, dict):
            return value
        try:  # a wrong count of parts fails the unpacking with a ValueError too
            start, end = (str(ipaddress.IPv4Address(part.strip())) for part in str(value).split("-"))
        except ValueError:
            self.fail(f"{value!r} is not a range of IPv4 addresses like 10.0.0.100-10.0.0.200", param, ctx)
        return {"start": start, "end": end}


class Since(click.ParamType):
    """An ISO time (``2024-05-01T12:00``, UTC unless it says) or an age (``30s``, ``15m``, ``2h``, ``7d``)."""

    name = "time"
    UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        match = re.fullmatch(r"(\d+)([smhd])", text)
        if match:
            stamp = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(match[1]) * self.UNITS[match[2]])
        else:
            try:
                stamp = dt.datetime.fromisoformat(text)
            except ValueError:
                self.fail(f"{text!r} is neither an ISO time (2024-05-01T12:00) nor an age (15m, 2h, 7d)", param, ctx)
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.timezone.utc)
        return stamp.isoformat(timespec="seconds")


class Duration(click.ParamType):
    """``90s``, ``30m``, ``1h``, ``7d`` or plain seconds -> seconds."""

    name = "duration"
    UNITS: ClassVar[dict[str, int]] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"(\d{1,7})([smhd]?)", str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a duration like 30m, 1h or 7d", param, ctx)
        return int(match[1]) * self.UNITS[match[2]]


NIC = Nic()
QUOTA = Quota()
PORT_RANGE = PortRange()
ADDRESS_RANGE = AddressRange()
SINCE = Since()
DURATION = Duration()


def read_password(from_stdin: bool, prompt: str = "Password", confirm: bool = False) -> str:
    """The first line of stdin, or a hidden prompt (asked twice with ``confirm``, for a new one)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: stdin holds no password")
        return password
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))
