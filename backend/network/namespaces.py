"""Running a function inside a network namespace: on a thread of its own, which enters the
namespace with setns(2) and ends with the function.

A thread's network namespace is its own (setns moves only the calling thread), so nothing
else of the process ever runs in the entered namespace, and nothing has to switch back.
Sockets the function opens (raw sockets, libiptc's, /proc/sys/net files) belong to that
namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, TypeVar

from .exceptions import LinkNotFound, NetworkError

__all__ = ["namespace_path", "run_in"]

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def namespace_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def run_in(namespace: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` inside ``namespace`` (a name under /run/netns; None: this process's own)."""
    if namespace is None:
        return fn()
    outcome: dict[str, object] = {}

    def enter_and_run() -> None:
        try:
            fd = os.open(namespace_path(namespace), os.O_RDONLY)
        except FileNotFoundError:
            outcome["error"] = LinkNotFound(f"namespace {namespace}: not found")
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                outcome["error"] = NetworkError(f"enter namespace {namespace}: {os.strerror(errno)}")
                return
        finally:
            os.close(fd)
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=enter_and_run, name=f"netns-{namespace}"[:15])
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
