"""Waiting in tests for something that happens in another thread or process."""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx

__all__ = ["until"]


def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "the condition", every: float = 0.1) -> Any:
    """``check()``'s first truthy value; a failed connection (an API restarting) counts as not yet."""
    end = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.TransportError:
            value = None
        if value:
            return value
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(every)
