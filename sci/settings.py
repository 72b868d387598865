"""Tunables of the tree, shared by every role.  Daemons fill this from their YAML config."""

from __future__ import annotations

from dataclasses import dataclass

from .proto import MAX_FRAME_BYTES

__all__ = ["TreeSettings"]

#: A parent's heartbeats go down this many times less often than its children's go up.
_DOWN_RATIO = 3


@dataclass(frozen=True, slots=True)
class TreeSettings:
    #: Most children a node is given by the planner (SCI's default).
    fanout: int = 32
    #: Seconds between a child's heartbeats up a quiet link; any frame counts as one.  They
    #: catch a stopped child and one whose loop hangs; a killed process is caught sooner, by
    #: its dropped connection.  Parents send theirs down less often (``down_interval``).
    heartbeat_interval: float = 1.0
    #: A child silent for this many intervals is dead (stopped, or its loop hung).
    heartbeat_misses: int = 3
    #: Seconds between ZMTP PINGs on every connection, sent by libzmq's I/O threads, which run
    #: while Python is busy or descheduled; 0: none.  Off by default: libzmq 4.3.5 aborts a
    #: process whose heartbeat timer fires on a connection whose write just failed (seen with
    #: thousands of connections per process, bench.tree at 10,000 hosts), and each PING costs
    #: as much as a tree heartbeat (docs/protocol.md, "Liveness").
    link_heartbeat_interval: float = 0.0
    #: A connection that carried nothing for this long after a PING is dropped by libzmq
    #: (a killed, stopped or cut-off peer), which ``disconnect_grace`` then turns into a death.
    link_timeout: float = 1.0
    #: A frame over this many bytes is dropped with a log event.
    max_frame_bytes: int = MAX_FRAME_BYTES
    #: After a connection drops, how long to wait for it to come back before treating the
    #: peer as dead (a killed process refuses the reconnect; a network blip usually heals).
    disconnect_grace: float = 0.5
    #: Most children, as a fraction of them (and at least 2), a node declares dead in one
    #: heartbeat interval.  More at once says more about this node (its loop or its I/O thread
    #: behind) than about them: it logs ``self_suspect`` and leaves the rest for later intervals.
    dead_cap: float = 0.25
    #: How long the root waits for a host whose route broke to attach again before its
    #: commands in flight fail as unreachable.
    reattach_grace: float = 5.0
    #: A relay flushes its aggregate this long before the deadline it was given, so that its
    #: answer reaches the root in time.
    hop_margin: float = 0.05
    #: Relays batch route changes for this long before sending them up.
    route_batch_delay: float = 0.02
    #: Most frames read from one socket before timers get a turn.
    read_batch: int = 512
    #: Seconds between a leaf's reports of its counters to its parent; 0 turns counting off
    #: on every node (for measuring what the counting costs).
    counters_interval: float = 10.0
    #: Seconds between the root's looks for parents carrying more than ``fanout`` children
    #: (the orphans of a failed agent stay on their fallback parents) and for hosts on the
    #: root itself while an agent has room; it moves some to agents with room.  0: never.
    rebalance_interval: float = 5.0
    #: Most hosts moved at one look: a move is a re-attach, and a batch of them is spread
    #: over the interval rather than thrown at the agents at once.
    rebalance_batch: int = 32

    @property
    def counting(self) -> bool:
        return self.counters_interval > 0

    @property
    def dead_after(self) -> float:
        """Silence after which a parent declares a child dead."""
        return self.heartbeat_interval * self.heartbeat_misses

    @property
    def down_interval(self) -> float:
        """Seconds between a parent's heartbeats down a quiet link.

        Only a child must be found dead within ``dead_after``: a parent's own parent does that.
        Its children need only move off it eventually (a killed parent they see at once, by
        the dropped connection), so heartbeats down, a third of all frames at rest otherwise,
        go a third as often, and each child waits longer before leaving (``parent_dead_after``).
        """
        return self.heartbeat_interval * _DOWN_RATIO

    @property
    def parent_dead_after(self) -> float:
        """Silence after which a child gives its parent up: two heartbeats down missed."""
        return max(self.dead_after, self.down_interval * 2)

    @property
    def silence_limit(self) -> float:
        """Longest silence forgiven while most peers of a node are silent at once (a loop that
        hangs is still found within 15 s at the default settings)."""
        return self.dead_after * 4

    @property
    def link_dead_after(self) -> float | None:
        """Longest a stopped or cut-off peer keeps its connection (the next PING, then its timeout);
        None without link heartbeats."""
        return self.link_heartbeat_interval + self.link_timeout if self.link_heartbeat_interval else None

    def validate(self) -> "TreeSettings":
        """Raise ValueError naming the field and the reason if a value makes no sense."""
        checks = [
            ("fanout", self.fanout >= 2, "must be at least 2"),
            ("heartbeat_interval", 0.01 <= self.heartbeat_interval <= 60, "must be between 0.01 and 60 seconds"),
            ("heartbeat_misses", 2 <= self.heartbeat_misses <= 100, "must be between 2 and 100"),
            # libzmq counts these in whole milliseconds.
            ("link_heartbeat_interval", self.link_heartbeat_interval == 0 or 0.01 <= self.link_heartbeat_interval <= 60,
             "must be 0 (none) or between 0.01 and 60 seconds"),
            ("link_timeout", 0.1 <= self.link_timeout <= 600, "must be between 0.1 and 600 seconds"),
            ("max_frame_bytes", 4096 <= self.max_frame_bytes <= 1 << 30, "must be between 4 KiB and 1 GiB"),
            ("disconnect_grace", 0 <= self.disconnect_grace < self.dead_after, "must be below the dead-after time"),
            ("dead_cap", 0 < self.dead_cap <= 1, "must be above 0 and at most 1"),
            ("reattach_grace", self.reattach_grace >= 0, "must not be negative"),
            ("hop_margin", 0 <= self.hop_margin < 10, "must be between 0 and 10 seconds"),
            ("route_batch_delay", 0 <= self.route_batch_delay <= 1, "must be between 0 and 1 second"),
            ("read_batch", self.read_batch >= 1, "must be at least 1"),
            ("counters_interval", self.counters_interval == 0 or 0.1 <= self.counters_interval <= 3600,
             "must be 0 (off) or between 0.1 and 3600 seconds"),
            ("rebalance_interval", self.rebalance_interval == 0 or 0.1 <= self.rebalance_interval <= 3600,
             "must be 0 (never) or between 0.1 and 3600 seconds"),
            ("rebalance_batch", self.rebalance_batch >= 1, "must be at least 1"),
        ]
        for name, ok, reason in checks:
            if not ok:
                raise ValueError(f"tree.{name}: {reason} (got {getattr(self, name)!r})")
        return self
