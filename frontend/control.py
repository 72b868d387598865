"""The frontend's local control socket: root-only break-glass access to the tree on the controller.

Operators use the REST API; this socket sends any op to any host, so it never leaves the
machine, and the process-level tests drive the tree through it.

One request, one reply, msgpack maps over a ZeroMQ REQ/REP pair on an ``ipc://`` path that
only root can open (the directory is created 0700).  Requests::

    {"op": "tree", "timeout": s}                  -> {"nodes": [NodeStatus as map, ...]}
    {"op": "submit", "command": op, "args": {..}, "hosts": [..]|None, "group": name|None,
     "timeout": s, "cmd_id": id|None}            -> {"cmd_id": id, "results": {host: {status, payload,
                                                      message, exit_status, latency_s}}}
    {"op": "stats"}                              -> {"stats": {commands, replays, duplicates_dropped, ...}}

Errors come back as {"error": "..."}.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from pathlib import Path
from typing import Any

import msgpack
import structlog
import zmq

from sci import SciError, Targets, TreeRoot

__all__ = ["ControlServer", "request"]

log = structlog.get_logger("frontend.control")


def _endpoint(path: str) -> str:
    return f"ipc://{path}"


class ControlServer:
    def __init__(self, root: TreeRoot, path: str) -> None:
        self.root = root
        self.path = path
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        #: the socket file this server made (device, inode), once bound
        self._bound: tuple[int, int] | None = None

    def start(self) -> None:
        directory = Path(self.path).parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.path.exists(self.path):
            os.unlink(self.path)  # left by a previous run that was killed
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(_endpoint(self.path))
        os.chmod(self.path, 0o600)
        self._bound = _identity(self.path)
        self._thread.start()
        log.info("control_listening", path=self.path)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        # libzmq unlinks an ipc path only in its I/O thread, after the socket's close, which a
        # frontend ending with os._exit never waits for: a clean stop removes its own file here.
        # Only its own: a file another process bound there since is left alone.
        if self._bound is not None and _identity(self.path) == self._bound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
                log.info("control_removed", path=self.path)

    def _serve(self) -> None:
        sock = self._sock
        while not self._stop.is_set():
            if not sock.poll(200):
                continue
            try:
                request_ = msgpack.unpackb(sock.recv(), raw=False)
                reply = self._handle(request_)
            except (ValueError, TypeError, KeyError, SciError, msgpack.UnpackException) as exc:
                reply = {"error": str(exc)}
            except Exception as exc:  # the socket must answer every request and keep serving
                log.exception("control_request_failed")
                reply = {"error": f"internal error: {type(exc).__name__}: {exc}"}
            sock.send(msgpack.packb(reply, use_bin_type=True))
        sock.close(linger=0)

    def _handle(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict):
            raise ValueError("request must be a map")
        op = req.get("op")
        timeout = float(req.get("timeout") or 5.0)
        if not 0 < timeout <= 86400:
            raise ValueError("timeout: must be between 0 and 86400 seconds")
        if op == "tree":
            return {"nodes": [dataclasses.asdict(n) for n in self.root.tree_status(timeout=min(timeout, 10.0))]}
        if op == "submit":
            hosts, group = req.get("hosts"), req.get("group")
            targets = Targets.to(*hosts) if hosts else Targets.named(group) if group else Targets.all()
            handle = self.root.submit(str(req["command"]), req.get("args") or {}, targets, timeout=timeout,
                                      cmd_id=req.get("cmd_id"))
            table = handle.wait(timeout + 5)
            return {"cmd_id": handle.id, "results": {
                h: {"status": r.status.name.lower(), "payload": r.payload, "message": r.message,
                    "exit_status": r.exit_status, "latency_s": handle.latency(h)}
                for h, r in table.items()}}
        if op == "stats":
            return {"stats": dataclasses.asdict(self.root.stats)}
        raise ValueError(f"unknown control op {op!r}")


def _identity(path: str) -> tuple[int, int] | None:
    """The file at ``path`` (device and inode), None if there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def request(path: str, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to a frontend's control socket and return its reply."""
    if not os.path.exists(path):
        raise ConnectionError(f"no frontend control socket at {path} (is cloudland-frontend running?)")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(_endpoint(path))
        sock.send(msgpack.packb(message, use_bin_type=True))
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"the frontend did not answer within {timeout:.0f}s")
        reply = msgpack.unpackb(sock.recv(), raw=False)
    finally:
        sock.close()
    if not isinstance(reply, dict):
        raise ConnectionError("malformed reply from the frontend")
    return reply
