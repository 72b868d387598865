"""sci: the scalable communication tree that carries cloudland's control plane.

A root (``TreeRoot``) sends commands down through relays (``Relay``) to leaves (``Leaf``),
one per host, and gathers their answers back up.  The package knows nothing of what the
commands do: a leaf hands them to an ``Executor``.
"""

from .exceptions import FrameError, IllegalTransition, SciError, TargetError, TreeClosed
from .journal import Journal
from .leaf import Executor, Leaf
from .relay import Relay
from .results import Result, Status
from .root import CommandHandle, NodeInfo, NodeStatus, Targets, TreeRoot
from .settings import TreeSettings

__all__ = [
    "CommandHandle",
    "Executor",
    "FrameError",
    "IllegalTransition",
    "Journal",
    "Leaf",
    "NodeInfo",
    "NodeStatus",
    "Relay",
    "Result",
    "SciError",
    "Status",
    "Targets",
    "TargetError",
    "TreeClosed",
    "TreeRoot",
    "TreeSettings",
]
