"""Which actions each resource allows in which status, and the status each action moves it to.

A request for an action its resource's status does not allow is refused with 409, naming
the status and what is allowed, instead of being sent to a host to fail there.
"""

from __future__ import annotations

from typing import Any

from .errors import Conflict

__all__ = ["INSTANCE", "SNAPSHOT", "VOLUME", "begin"]

#: action -> (statuses it may start from, status while it runs)
INSTANCE = {
    "start": (frozenset({"stopped"}), "starting"),
    "stop": (frozenset({"active"}), "stopping"),
    "reboot": (frozenset({"active"}), "rebooting"),
    "resize": (frozenset({"active", "stopped"}), "resizing"),
    "image": (frozenset({"stopped"}), "imaging"),
    "delete": (frozenset({"active", "stopped", "error"}), "deleting"),
}
VOLUME = {
    "attach": (frozenset({"available"}), "attaching"),
    "detach": (frozenset({"in-use"}), "detaching"),
    "delete": (frozenset({"available", "error"}), "deleting"),
}
SNAPSHOT = {
    "delete": (frozenset({"available", "error"}), "deleting"),
}


def begin(table: dict[str, tuple[frozenset[str], str]], kind: str, row: Any, action: str) -> str:
    """Move ``row`` into ``action``'s running status; return the status it had."""
    allowed, running = table[action]
    if row.status not in allowed:
        raise Conflict(f"cannot {action} a {kind} that is {row.status}; it must be {' or '.join(sorted(allowed))}",
                       "status")
    before: str = row.status
    row.status = running
    return before
