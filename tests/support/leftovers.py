"""Checking that a test left no process of its own behind.

Only processes that appeared during the test count: session-wide servers (the PostgreSQL
of the API tests) are children of pytest too, and legitimately outlive one test.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import psutil


def _children() -> set[psutil.Process]:
    return {p for p in psutil.Process().children(recursive=True) if p.is_running()}


@contextlib.contextmanager
def no_new_processes() -> Iterator[None]:
    before = _children()
    yield
    left = [p for p in _children() - before if p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left behind: {left}"
