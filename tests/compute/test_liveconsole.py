"""A host's live console sessions (``backend/compute/liveconsole.py``): leases, take-overs and notices.

The stream is the driver's to open; here it is a recorder, so that the sessions' rules are seen
without a guest. A real guest's console is in ``tests/test_live_console.py``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

from backend.compute.exceptions import NotFound
from backend.compute.liveconsole import CONSOLE_CLOSED, CONSOLE_OUTPUT, LiveConsoles

S1, S2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


class Stream:
    def __init__(self, on_output: Callable[[bytes], None], on_end: Callable[[str], None]) -> None:
        self.on_output, self.on_end = on_output, on_end
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True


class Host:
    def __init__(self) -> None:
        self.now = 100.0
        self.streams: dict[str, Stream] = {}
        self.notices: list[tuple[str, Any]] = []
        self.consoles = LiveConsoles(self.open, lambda topic, body: self.notices.append((topic, body)),
                                     clock=lambda: self.now)

    def open(self, instance_id: str, on_output: Callable[[bytes], None], on_end: Callable[[str], None]) -> Any:
        if instance_id == "off":
            raise NotFound("instance off is shutoff")
        stream = self.streams[instance_id] = Stream(on_output, on_end)
        return stream


@pytest.fixture
def host() -> Host:
    h = Host()
    yield h
    h.consoles.stop()


def test_output_goes_up_numbered_and_input_down_in_order(host: Host) -> None:
    host.consoles.open("vm1", S1, 30)
    stream = host.streams["vm1"]
    stream.on_output(b"login: ")
    stream.on_output(b"\r\n")
    host.consoles.write(S1, b"root\r")
    assert host.notices == [
        (CONSOLE_OUTPUT, {"session": S1, "instance": "vm1", "seq": 0, "data": b"login: "}),
        (CONSOLE_OUTPUT, {"session": S1, "instance": "vm1", "seq": 1, "data": b"\r\n"})]
    assert stream.sent == [b"root\r"]
    with pytest.raises(NotFound, match="is not open on this host"):
        host.consoles.write(S2, b"x")


def test_a_lease_renewed_lives_and_one_that_lapses_closes_with_a_notice(host: Host) -> None:
    host.consoles.open("vm1", S1, 30)
    host.now += 20
    host.consoles.open("vm1", S1, 30)  # renewed: the same stream, not another
    host.now += 20
    done = threading.Event()
    host.consoles._notify = lambda topic, body: (host.notices.append((topic, body)), done.set())  # type: ignore[assignment]
    assert not done.wait(1.5) and not host.streams["vm1"].closed
    host.now += 20
    assert done.wait(5)
    assert host.notices == [(CONSOLE_CLOSED, {"session": S1, "instance": "vm1",
                                              "reason": "its lease lapsed: the frontend stopped renewing it"})]
    assert host.streams["vm1"].closed


def test_a_new_session_takes_the_console_and_the_old_one_is_told(host: Host) -> None:
    host.consoles.open("vm1", S1, 30)
    first = host.streams["vm1"]
    host.consoles.open("vm1", S2, 30)
    assert first.closed and not host.streams["vm1"].closed
    assert host.notices == [(CONSOLE_CLOSED, {"session": S1, "instance": "vm1",
                                              "reason": "another console session took it"})]
    first.on_output(b"late")  # the old stream's last bytes go nowhere
    assert len(host.notices) == 1
    with pytest.raises(NotFound, match="for another instance"):
        host.consoles.open("vm2", S2, 30)


def test_a_stream_that_ends_is_told_once_and_a_closed_one_not_at_all(host: Host) -> None:
    host.consoles.open("vm1", S1, 30)
    host.streams["vm1"].on_end("the guest's serial port closed")
    host.streams["vm1"].on_end("the guest's serial port closed")
    assert host.notices == [(CONSOLE_CLOSED, {"session": S1, "instance": "vm1",
                                              "reason": "the guest's serial port closed"})]
    host.consoles.open("vm2", S2, 30)
    host.consoles.close(S2)
    host.consoles.close(S2)
    assert host.streams["vm2"].closed and len(host.notices) == 1
    with pytest.raises(NotFound):
        host.consoles.open("off", S1, 30)
