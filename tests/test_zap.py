"""The ZAP handler: only the keys a node's policy allows finish the CURVE handshake, each
message carries its sender's key, and the handler goes with its context."""

from __future__ import annotations

import threading

import zmq

from sci.security import KeyPair, Security, connect_curve, serve_curve


def _exchange(ctx: zmq.Context, allowed: set[str]) -> dict[str, str | None]:
    """A CURVE server allowing ``allowed`` and two clients (one allowed, one not): what the
    server received from each, as the User-Id it came with (None: nothing came)."""
    server_keys = Security(KeyPair.generate(), "")
    good, bad = Security(KeyPair.generate(), ""), Security(KeyPair.generate(), "")
    allowed.add(good.keypair.public)
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    serve_curve(server, ctx, "node-x", server_keys, allowed.__contains__)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    got: dict[str, str | None] = {"good": None, "bad": None}
    clients = []
    for name, security in (("good", good), ("bad", bad)):
        client = ctx.socket(zmq.DEALER)
        client.linger = 0
        client.identity = name.encode()
        connect_curve(client, security, server_keys.keypair.public)
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"hi")
        clients.append(client)
    while server.poll(1500):
        identity, frame = server.recv_multipart(copy=False)
        got[identity.bytes.decode()] = frame.get("User-Id")
    assert got["good"] == good.keypair.public
    for sock in [server, *clients]:
        sock.close()
    return got


def _zap_threads() -> int:
    return sum(t.name == "sci-zap" for t in threading.enumerate())


def test_only_allowed_keys_get_in_and_the_handler_goes_with_its_context() -> None:
    before = _zap_threads()
    for _ in range(2):  # a context made after one is gone gets a handler of its own
        ctx = zmq.Context()
        got = _exchange(ctx, set())
        assert got["bad"] is None
        assert _zap_threads() == before + 1
        ctx.term()
        for _ in range(50):
            if _zap_threads() == before:
                break
            threading.Event().wait(0.05)
        assert _zap_threads() == before
