"""A relay never loses a route change that happens while it is attaching to a parent."""

from __future__ import annotations

from typing import Any, Callable

from sci import Relay, TreeSettings
from sci.proto import Role, decode
from sci.routes import RouteChange


class RecordingUplink:
    """Stands in for the relay's link to its parent: records what would go up."""

    def __init__(self) -> None:
        self.attached = False
        self.sent: list[Any] = []

    def send(self, build: Callable[[int], bytes]) -> None:
        self.sent.append(decode(build(7)).fields)


def entry(node: str) -> list[Any]:
    return [node, [1, 1], "child-agent", int(Role.BACKEND), 3, None, [], None]


def test_change_between_hello_and_welcome_goes_up_after_welcome() -> None:
    relay = Relay("r1", "tcp://127.0.0.1:1", "tcp://127.0.0.1:0", TreeSettings())
    up = RecordingUplink()
    relay.up = up  # type: ignore[assignment]
    relay.subtree_entries()  # the HELLO snapshot is taken
    relay.on_routes("child-agent", RouteChange(added=[entry("h1")]))
    relay._flush_routes()  # the batch timer fires before WELCOME: nothing may be dropped
    assert up.sent == []
    up.attached = True
    relay.on_attached("p1")
    assert up.sent == [[[entry("h1")], []]]


def test_changes_before_the_hello_snapshot_are_not_sent_twice() -> None:
    relay = Relay("r1", "tcp://127.0.0.1:1", "tcp://127.0.0.1:0", TreeSettings())
    up = RecordingUplink()
    relay.up = up  # type: ignore[assignment]
    relay.on_routes("child-agent", RouteChange(added=[entry("h1")]))
    relay.subtree_entries()  # h1 travels in the HELLO itself
    up.attached = True
    relay.on_attached("p1")
    assert up.sent == []
