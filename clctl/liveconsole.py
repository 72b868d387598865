"""``clctl instance console --attach``: the terminal's side of a live serial console.

What the user types goes to the guest byte for byte (the terminal in raw mode, so that ^C,
arrows and tabs reach the guest's shell), what the guest prints comes back. ``Ctrl-]``
detaches, as in ``virsh console`` and telnet. With stdin not a terminal (a script, a pipe),
its bytes are sent as they come; once it ends, the output is still shown until the console
closes or the user interrupts.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import termios
import threading
import tty
from typing import BinaryIO, Iterator

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from .client import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, ClctlError

__all__ = ["DETACH", "attach"]

#: Ctrl-]
DETACH = b"\x1d"
#: the server's close codes (``frontend/api/routes/liveconsole.py``) and how clctl exits on them
_LEADER_GONE = 1012
_EXITS = {1000: EXIT_OK, _LEADER_GONE: EXIT_UNREACHABLE}


def attach(connection: ClientConnection, name: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Run the console until the user detaches (returns) or the server ends it (``ClctlError``)."""
    fd = stdin.fileno()
    interactive = os.isatty(fd)
    _say(f"Connected to the console of {name}; Ctrl-] detaches.", interactive)
    ended: list[tuple[int, str]] = []
    reader = threading.Thread(target=_show, args=(connection, stdout, ended, interactive), name="console-output",
                              daemon=True)
    reader.start()
    with _raw(fd) if interactive else contextlib.nullcontext():
        try:
            _type(connection, fd, reader)
        except KeyboardInterrupt:  # only without a terminal: in raw mode ^C goes to the guest
            pass
        finally:
            connection.close()
            reader.join(5)
    if ended:
        code, reason = ended[0]
        if code not in (1000,):
            raise ClctlError(reason or f"the console closed (code {code})", _EXITS.get(code, EXIT_REFUSED))
    _say("Detached.", interactive)


def _type(connection: ClientConnection, fd: int, reader: threading.Thread) -> None:
    while reader.is_alive():
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not data:  # the pipe ended: keep showing the output until the console closes
            reader.join()
            return
        before, detach, _ = data.partition(DETACH)
        try:
            if before:
                connection.send(before)
        except ConnectionClosed:
            return
        if detach:
            return


def _show(connection: ClientConnection, stdout: BinaryIO, ended: list[tuple[int, str]], interactive: bool) -> None:
    try:
        for message in connection:
            if isinstance(message, bytes):
                stdout.write(message)
                stdout.flush()
                continue
            event = json.loads(message)
            if event.get("event") == "seat":
                _say(str(event.get("message", "")), interactive)
            elif event.get("event") == "closed":
                ended.append((0, str(event.get("reason", ""))))
    except ConnectionClosed:
        pass
    close = connection.protocol.close_rcvd
    if close is not None:
        reason = ended[0][1] if ended else close.reason
        ended[:] = [(close.code, reason)]


def _say(text: str, interactive: bool) -> None:
    """A line of clctl's own on stderr (in raw mode a newline does not return the carriage)."""
    sys.stderr.write(f"[{text}]" + ("\r\n" if interactive else "\n"))
    sys.stderr.flush()


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
