"""A node's own counts (frames relayed, dropped, handler errors, op timings), reported up the tree.

Keys are ``name`` or ``name:label`` (``frames_dropped:oversized``, ``op_seconds:ping``); values
only grow.  A relay reports its totals in each tree status reply.  A leaf sends what it
counted since its last report in a COUNTERS frame every ``counters_interval``; its parent adds
those increments into one running sum for all its leaves.  Increments rather than totals
keep each parent's sum monotonic when a leaf restarts (its totals go back to zero) or moves
to another parent (its history stays where it was counted), so Prometheus sees counters that
never go down without a real reset.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Counters", "add_into", "check_counters"]

Table = dict[str, float]

#: Most keys one report may carry: op names come from a fixed registry, so a bigger table is
#: a misbehaving peer, not a busy one.
MAX_KEYS = 512
MAX_KEY_LEN = 160
#: Counts in a table stay below this.
MAX_COUNT = 10**18


class Counters:
    """Counts for one node, touched only from its event loop's thread."""

    __slots__ = ("enabled", "totals", "_pending")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.totals: Table = {}
        self._pending: Table = {}

    def add(self, key: str, amount: float = 1) -> None:
        if self.enabled:
            self.totals[key] = self.totals.get(key, 0) + amount
            self._pending[key] = self._pending.get(key, 0) + amount

    def take_increments(self) -> Table:
        """What was counted since the last call (the leaf's next COUNTERS frame)."""
        pending, self._pending = self._pending, {}
        return pending


def add_into(total: Table, increments: Table) -> None:
    """Add a leaf's increments into its parent's running sum.  The sum goes up in the parent's
    status replies, so it keeps within what check_counters takes there (else one leaf's odd
    reports would get its relay's whole entry dropped): names past MAX_KEYS are left out, and a
    count stops just below MAX_COUNT."""
    for key, value in increments.items():
        if key in total or len(total) < MAX_KEYS:
            total[key] = min(total.get(key, 0) + value, MAX_COUNT - 1)


def check_counters(value: Any) -> Table:
    """Return ``value`` if it is a table of counts a peer may send; raise ValueError otherwise."""
    if type(value) is not dict or len(value) > MAX_KEYS:
        raise ValueError("counters must be a map of at most 512 entries")
    for key, count in value.items():
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LEN:
            raise ValueError("counter names must be strings of 1-160 characters")
        if type(count) not in (int, float) or not 0 <= count < MAX_COUNT:
            raise ValueError(f"counter {key[:40]!r} must be a non-negative number")
    return value
