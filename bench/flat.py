"""The physical reference: a flat star, one ROUTER in the bench and one DEALER per host.

No tree, no sessions, no routes: a broadcast is N sends and N answers, each end doing the
least Python the tree's leaf does (decode the request, encode an answer), on the same
epoll reactor as sci.  The tree's broadcast time over this one is what the tree costs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import msgpack
import zmq

from sci.reactor import Reactor, ZContext, ZSocket

from .procs import prepare_child, raise_fd_limit

__all__ = ["FlatStar", "run_flat"]

_READ_BATCH = 512
_HWM = 100_000


def run_flat(hosts: list[str], endpoint: str) -> None:
    """Answer every request on every host's DEALER until SIGTERM."""
    prepare_child()
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 2 * len(hosts) + 64)
    reactor = Reactor()
    socks = [_flat_host(ctx, reactor, host, endpoint) for host in hosts]
    signal.signal(signal.SIGTERM, lambda *_: reactor.stop())
    try:
        reactor.run()
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.destroy(linger=0)


def _flat_host(ctx: ZContext, reactor: Reactor, host: str, endpoint: str) -> ZSocket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, host.encode())
    sock.setsockopt(zmq.SNDHWM, _HWM)
    sock.setsockopt(zmq.RCVHWM, _HWM)
    sock.connect(endpoint)
    sock.send(b"")  # announces the host to the ROUTER once the connection is up

    def on_readable(s: ZSocket) -> bool:
        for _ in range(_READ_BATCH):
            try:
                data = s.recv(zmq.NOBLOCK)
            except zmq.Again:
                return False
            round_id = msgpack.unpackb(data)
            s.send(msgpack.packb([round_id, {host: [0, {}, 0]}]), zmq.NOBLOCK)
            reactor.touch(s)
        return True

    reactor.add_reader(sock, on_readable)
    return sock


class FlatStar:
    """The bench's end: a ROUTER that all hosts connect to."""

    def __init__(self, hosts: list[str]) -> None:
        raise_fd_limit()  # one TCP connection per host ends here
        self.hosts = [h.encode() for h in hosts]
        self.ctx = zmq.Context()
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)
        sock.setsockopt(zmq.BACKLOG, 4096)  # thousands connect at once
        sock.bind("tcp://127.0.0.1:0")
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sock = sock

    def wait_ready(self, timeout: float, check: Callable[[], None]) -> None:
        """Block until every host has announced itself; ``check`` raises if the hosts' processes died."""
        waiting = set(self.hosts)
        end = time.monotonic() + timeout
        while waiting:
            check()
            try:
                ident, _ = self._recv(min(end, time.monotonic() + 1.0))
            except TimeoutError:
                if time.monotonic() >= end:
                    raise
                continue
            waiting.discard(ident)

    def round(self, round_id: int, timeout: float = 30.0) -> tuple[float, int]:
        """Send to every host, gather every answer; return (seconds, hosts that did not answer)."""
        data = msgpack.packb(round_id)
        start = time.monotonic()
        for ident in self.hosts:
            self.sock.send_multipart((ident, data))
        waiting = len(self.hosts)
        end = start + timeout
        try:
            while waiting:
                _, reply = self._recv(end)
                if msgpack.unpackb(reply)[0] == round_id:
                    waiting -= 1
        except TimeoutError:
            pass
        return time.monotonic() - start, waiting

    def _recv(self, end: float) -> tuple[bytes, bytes]:
        try:
            ident, data = self.sock.recv_multipart(zmq.NOBLOCK)
            return ident, data
        except zmq.Again:
            pass  # nothing queued: only now pay for a poll
        left_ms = int((end - time.monotonic()) * 1000)
        if left_ms <= 0 or not self.sock.poll(left_ms):
            raise TimeoutError("flat star: hosts did not answer in time")
        ident, data = self.sock.recv_multipart()
        return ident, data

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.destroy(linger=0)
