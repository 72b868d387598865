"""The leader's console hub (``frontend/liveconsole.py``): one host session per instance, one
writer, input in order, and every client told when its console ends.

The tree is a recorder of the ops the hub sends; a real guest's console, through the API and
clctl, is in ``tests/test_live_console.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Iterator

import pytest

from frontend.errors import Conflict
from frontend.liveconsole import CONSOLE_CLOSED, CONSOLE_OUTPUT, Attachment, ConsoleHub, Ended, Seat
from sci import CommandHandle, Result, Status, Targets


class Tree:
    """Answers every op at once (``fail`` by op: an error instead); records what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, str] = {}
        self.lock = threading.Lock()

    def submit(self, op: str, body: Any, targets: Targets, timeout: float, cmd_id: str | None) -> CommandHandle:
        with self.lock:
            self.sent.append((op, body))
        handle = CommandHandle(f"c{len(self.sent)}", op)
        host = targets.hosts[0]
        result = Result(Status.ERROR, message=self.fail[op]) if op in self.fail else Result(Status.OK, payload={})
        handle._set_targets([host])
        handle._deliver([(host, result)])
        handle._finish()
        return handle

    def ops(self, op: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for name, body in self.sent if name == op]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def hub(loop: asyncio.AbstractEventLoop) -> Iterator[tuple[ConsoleHub, Tree]]:
    tree = Tree()
    console_hub = ConsoleHub(tree.submit, lease_s=0.3)
    console_hub.start()
    yield console_hub, tree
    console_hub.stop("test over")


def items(attachment: Attachment, count: int) -> list[Any]:
    async def take() -> list[Any]:
        return [await asyncio.wait_for(attachment.items.get(), 5) for _ in range(count)]
    return asyncio.run_coroutine_threadsafe(take(), attachment.loop).result(10)


def test_one_session_per_instance_and_the_seat_passes_on(hub: tuple[ConsoleHub, Tree],
                                                         loop: asyncio.AbstractEventLoop) -> None:
    consoles, tree = hub
    first = consoles.attach("vm1", "hv0", "ann", True, loop)
    watcher = consoles.attach("vm1", "hv0", "bob", False, loop)
    second = consoles.attach("vm1", "hv0", "cy", True, loop)
    (opened,) = tree.ops("console.open")
    session = opened["session"]
    assert [items(a, 1)[0] for a in (first, watcher, second)] == [
        Seat(True, "you may type"), Seat(False, "you are watching"),
        Seat(False, "another user is typing: you are watching")]
    consoles.on_output("hv0", {"session": session, "instance": "vm1", "seq": 0, "data": b"login: "})
    consoles.on_output("hv9", {"session": session, "instance": "vm1", "seq": 1, "data": b"forged"})  # not its host
    assert [items(a, 1) for a in (first, watcher, second)] == [[b"login: "]] * 3
    assert not consoles.type(second, b"ignored") and consoles.type(first, b"root\r")
    until_sent = time.monotonic() + 5
    while not tree.ops("console.write") and time.monotonic() < until_sent:
        time.sleep(0.01)
    assert tree.ops("console.write") == [{"session": session, "data": b"root\r"}]
    consoles.detach(first)
    assert items(second, 1) == [Seat(True, "the user who was typing left: you may type")]
    consoles.detach(second)
    assert tree.ops("console.close") == []
    consoles.detach(watcher)  # the last: the host's session is closed
    assert tree.ops("console.close") == [{"session": session}]


def test_the_host_ending_a_console_ends_it_for_every_client(hub: tuple[ConsoleHub, Tree],
                                                            loop: asyncio.AbstractEventLoop) -> None:
    consoles, tree = hub
    a = consoles.attach("vm1", "hv0", "ann", True, loop)
    b = consoles.attach("vm1", "hv0", "bob", False, loop)
    session = tree.ops("console.open")[0]["session"]
    consoles.on_closed("hv0", {"session": session, "instance": "vm1", "reason": "the guest's serial port closed"})
    ended = Ended("the console closed: the guest's serial port closed")
    assert items(a, 2)[1] == ended and items(b, 2)[1] == ended
    c = consoles.attach("vm1", "hv0", "ann", True, loop)  # a new session after the old one ended
    assert len(tree.ops("console.open")) == 2 and items(c, 1) == [Seat(True, "you may type")]


def test_a_host_that_refuses_or_forgets_the_session_is_told_to_the_client(hub: tuple[ConsoleHub, Tree],
                                                                           loop: asyncio.AbstractEventLoop) -> None:
    consoles, tree = hub
    tree.fail["console.open"] = "instance vm1 is shutoff: a live console needs it running"
    with pytest.raises(Conflict, match="did not open the console: instance vm1 is shutoff"):
        consoles.attach("vm1", "hv0", "ann", True, loop)
    del tree.fail["console.open"]
    a = consoles.attach("vm1", "hv0", "ann", True, loop)
    tree.fail["console.open"] = "console session x is not open on this host"  # its renewal fails
    assert items(a, 2)[1] == Ended("the console was lost: console session x is not open on this host")


def test_stopping_the_hub_ends_every_console_as_a_leader_change(hub: tuple[ConsoleHub, Tree],
                                                                loop: asyncio.AbstractEventLoop) -> None:
    consoles, tree = hub
    a = consoles.attach("vm1", "hv0", "ann", True, loop)
    consoles.stop("this frontend stopped leading: attach again")
    assert items(a, 2)[1] == Ended("this frontend stopped leading: attach again", 1012)
    assert len(tree.ops("console.close")) == 1
    with pytest.raises(Exception, match="leading frontend"):
        consoles.attach("vm1", "hv0", "ann", True, loop)
    consoles.start()


def test_a_client_that_does_not_keep_up_is_dropped(hub: tuple[ConsoleHub, Tree], loop: asyncio.AbstractEventLoop,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    consoles, tree = hub
    monkeypatch.setattr("frontend.liveconsole.MAX_BACKLOG_BYTES", 10)
    slow = consoles.attach("vm1", "hv0", "ann", True, loop)
    session = tree.ops("console.open")[0]["session"]
    for seq in range(3):
        consoles.on_output("hv0", {"session": session, "instance": "vm1", "seq": seq, "data": b"12345"})
    got = items(slow, 4)
    assert got[1:3] == [b"12345", b"12345"]
    assert got[3] == Ended("the client did not keep up with the console's output", 4429)
    assert tree.ops("console.close") == [{"session": session}]
    assert (CONSOLE_OUTPUT, CONSOLE_CLOSED) == ("console.output", "console.closed")
