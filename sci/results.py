"""The typed fate of one command on one host, as the caller of ``submit`` sees it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .proto import shown

__all__ = ["Status", "Result"]


class Status(IntEnum):
    OK = 0  #: the handler ran; ``payload`` is what it returned
    ERROR = 1  #: the handler (or the backend) failed; ``message`` and ``exit_status`` say how
    UNREACHABLE = 2  #: no route to the host (unknown, dead, or not back within the grace period)
    TIMEOUT = 3  #: the command's deadline passed before the host's answer reached the root
    #: On the wire only: the route to the host broke while the command was out.  The root
    #: turns it into a replay along the new route, or UNREACHABLE after the grace period.
    LOST = 4


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    payload: Any = None
    message: str = ""
    exit_status: int = 0

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_wire(self) -> list[Any]:
        data = self.payload if self.status is Status.OK else self.message
        return [int(self.status), data, self.exit_status]

    @classmethod
    def from_wire(cls, entry: list[Any]) -> "Result":
        """Read [status, data, exit_status]; a malformed entry becomes an ERROR result, not a crash."""
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], int):
            return cls(Status.ERROR, message=f"malformed result entry: {shown(entry)}", exit_status=-1)
        try:
            status = Status(entry[0])
        except ValueError:
            return cls(Status.ERROR, message=f"unknown result status {entry[0]}", exit_status=-1)
        exit_status = entry[2] if isinstance(entry[2], int) else -1
        if status is Status.OK:
            return cls(status, payload=entry[1], exit_status=exit_status)
        message = entry[1] if isinstance(entry[1], str) else shown(entry[1])
        return cls(status, message=message, exit_status=exit_status)

    @classmethod
    def error(cls, message: str, exit_status: int = 1) -> "Result":
        return cls(Status.ERROR, message=message, exit_status=exit_status)
