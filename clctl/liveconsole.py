"""``clctl instance console --attach``: the terminal's side of a live serial console.

What the user types goes to the guest byte for byte (the terminal in raw mode, so that ^C,
arrows and tabs reach the guest's shell), what the guest prints comes back. ``Ctrl-]``
detaches, as in ``virsh console`` and telnet. With stdin not a terminal (a script, a pipe),
its bytes are sent as they come; once it ends, the output is still shown until the console
closes or the user interrupts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import termios
import threading
import tty
from typing import Awaitable, BinaryIO, Callable, Iterator

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .client import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, ClctlError

__all__ = ["DETACH", "attach"]

#: Ctrl-]
DETACH = b"\x1d"
#: the server's close codes (``frontend/api/routes/liveconsole.py``) and how clctl exits on them
_LEADER_GONE = 1012
_EXITS = {1000: EXIT_OK, _LEADER_GONE: EXIT_UNREACHABLE}


def attach(opening: Callable[[], Awaitable[ClientConnection]], name: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Open the console ``opening`` connects to and run it until the user detaches (returns) or
    the server ends it (``ClctlError``)."""
    fd = stdin.fileno()
    interactive = os.isatty(fd)
    try:
        ended = asyncio.run(_attach(opening, name, fd, stdout, interactive))
    except KeyboardInterrupt:  # only without a terminal: in raw mode ^C goes to the guest
        ended = None
    if ended is not None:
        code, reason = ended
        if code != 1000:
            raise ClctlError(reason or f"the console closed (code {code})", _EXITS.get(code, EXIT_REFUSED))
    _say("Detached.", interactive)


async def _attach(opening: Callable[[], Awaitable[ClientConnection]], name: str, fd: int, stdout: BinaryIO,
                  interactive: bool) -> tuple[int, str] | None:
    """The close code and reason the console closed with (1000 when the user detached)."""
    connection = await opening()
    _say(f"Connected to the console of {name}; Ctrl-] detaches.", interactive)
    typed: asyncio.Queue[bytes] = asyncio.Queue()
    # A thread, not the loop's reader: stdin may be a regular file, which epoll cannot watch.
    # A daemon, since nothing interrupts its read when the console ends first.
    threading.Thread(target=_read_input, args=(fd, asyncio.get_running_loop(), typed), name="console-input",
                     daemon=True).start()
    with _raw(fd) if interactive else contextlib.nullcontext():
        showing = asyncio.create_task(_show(connection, stdout, interactive))
        typing = asyncio.create_task(_type(connection, typed))
        try:
            await asyncio.wait({showing, typing}, return_when=asyncio.FIRST_COMPLETED)
            if typing.done() and not typing.result():  # the input ended: show the output until the console closes
                await showing
        finally:
            typing.cancel()
            await connection.close()
        return await showing


async def _type(connection: ClientConnection, typed: asyncio.Queue[bytes]) -> bool:
    """Send what is typed; True once the user detaches (or the console went), False once the input ends."""
    while data := await typed.get():
        before, detach, _ = data.partition(DETACH)
        try:
            if before:
                await connection.send(before)
        except ConnectionClosed:
            return True
        if detach:
            return True
    return False


async def _show(connection: ClientConnection, stdout: BinaryIO, interactive: bool) -> tuple[int, str] | None:
    """Show the guest's output until the console closes; its close code and reason."""
    reason = None
    try:
        async for message in connection:
            if isinstance(message, bytes):
                stdout.write(message)
                stdout.flush()
                continue
            event = json.loads(message)
            if event.get("event") == "seat":
                _say(str(event.get("message", "")), interactive)
            elif event.get("event") == "closed":
                reason = str(event.get("reason", ""))
    except ConnectionClosed:
        pass
    close = connection.protocol.close_rcvd
    return None if close is None else (close.code, reason or close.reason)


def _read_input(fd: int, loop: asyncio.AbstractEventLoop, typed: asyncio.Queue[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        try:
            loop.call_soon_threadsafe(typed.put_nowait, data)
        except RuntimeError:  # the console ended and its loop with it
            return
        if not data:  # the input ended (an empty read says so)
            return


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
