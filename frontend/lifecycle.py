"""Which actions each resource allows in which status, and the status each action moves it to.

A request for an action its resource's status does not allow is refused with 409, naming
the status and what is allowed, instead of being sent to a host to fail there.
"""

from __future__ import annotations

from typing import Any

from .errors import Conflict

__all__ = ["INSTANCE", "INSTANCE_SETTLED", "SNAPSHOT", "STATUS_OF_POWER", "VOLUME", "begin"]

#: action -> (statuses it may start from, status while it runs)
INSTANCE = {
    # Start also resumes a paused guest, and boots a crashed one again.
    "start": (frozenset({"stopped", "crashed", "paused"}), "starting"),
    "stop": (frozenset({"active", "paused"}), "stopping"),
    "reboot": (frozenset({"active", "paused"}), "rebooting"),
    "resize": (frozenset({"active", "stopped"}), "resizing"),
    "image": (frozenset({"stopped"}), "imaging"),
    "delete": (frozenset({"active", "stopped", "paused", "crashed", "error"}), "deleting"),
}
#: an instance no task is changing, whose status follows its guest's power state when that
#: changes outside the API (the host's notices, the reconcile)
INSTANCE_SETTLED = frozenset({"active", "stopped", "paused", "crashed"})
#: a host's power state of a guest -> the settled status it means
STATUS_OF_POWER = {"running": "active", "paused": "paused", "shutoff": "stopped", "crashed": "crashed"}
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
