"""A relay's collection of one command's answers from its subtree.

A gather opens when a relay forwards a command (one per command id and wave), expects one
answer per host it sent to, and closes when every expected host has answered, or has been
marked LOST because its route broke, or when its deadline comes.  It then goes up as a
single RESULTS frame: one message per relay per command.  Answers that arrive after the
gather closed are passed up on their own, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .results import Status

__all__ = ["Gather"]

_LOST = int(Status.LOST)


@dataclass(slots=True)
class Gather:
    cmd_id: str
    wave: int
    op: str
    body: bytes
    #: the root epoch the command came with, sent again with it when a route moves
    epoch: int
    #: monotonic time at which the relay sends what it has
    flush_at: float
    #: monotonic time the root gives up (what replays are sent with)
    deadline: float
    #: host -> child it was sent through, for hosts not yet answered
    pending: dict[str, str] = field(default_factory=dict)
    #: host -> [status, data, exit_status] as it goes up
    answers: dict[str, list[Any]] = field(default_factory=dict)

    def take(self, table: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Record answers; return those this gather was not waiting for (to pass up as they are)."""
        stray: dict[str, list[Any]] = {}
        pending = self.pending
        answers = self.answers
        for host, entry in table.items():
            if pending.pop(host, None) is not None or (
                host in answers and answers[host][0] == _LOST
            ):
                answers[host] = entry
            elif host not in answers:
                stray[host] = entry
        return stray

    def lose(self, host: str, reason: str) -> None:
        if self.pending.pop(host, None) is not None:
            self.answers[host] = [_LOST, reason, 0]

    def resend(self, host: str, child: str) -> bool:
        """The host's route now goes through ``child``.  True if the command must go again that way.

        A host still pending through the same child is left alone: the change happened further
        down, and the relay there repairs it.
        """
        via = self.pending.get(host)
        if via is not None:
            if via == child:
                return False
        elif not (host in self.answers and self.answers[host][0] == _LOST):
            return False
        self.answers.pop(host, None)
        self.pending[host] = child
        return True

    @property
    def complete(self) -> bool:
        return not self.pending
