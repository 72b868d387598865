"""Errors raised by the tree library.

    SciError                base: carries ``code``
    ├── FrameError          a frame that does not decode or validate (``reason`` names the class)
    ├── TargetError         a command addressed to something the tree cannot resolve
    ├── TreeClosed          the node was stopped while the caller waited
    └── IllegalTransition   a lifecycle moved in a way its transition table forbids
"""

from __future__ import annotations

__all__ = ["SciError", "FrameError", "TargetError", "TreeClosed", "IllegalTransition"]


class SciError(Exception):
    code = "sci_error"


class FrameError(SciError):
    code = "bad_frame"

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        #: one of: oversized, undecodable, malformed, version
        self.reason = reason


class TargetError(SciError):
    code = "bad_target"


class TreeClosed(SciError):
    code = "tree_closed"


class IllegalTransition(SciError):
    code = "illegal_transition"
