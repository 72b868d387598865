"""sci: the scalable communication tree that carries cloudland's control plane.

A root (``TreeRoot``) sends commands down through relays (``Relay``) to leaves (``Leaf``),
one per host, and gathers their answers back up.  The package knows nothing of what the
commands do: a leaf hands them to an ``Executor``.
"""

from .claims import ClaimSigner
from .exceptions import FrameError, IllegalTransition, SciError, TargetError, TreeClosed
from .journal import Journal
from .leaf import Executor, Leaf
from .relay import Relay
from .results import Result, Status
from .root import CommandHandle, NodeCounters, NodeInfo, NodeStatus, Targets, TreeEvent, TreeReport, TreeRoot
from .security import KeyPair, Keyring, Security, SecurityError
from .settings import TreeSettings

__all__ = [
    "ClaimSigner",
    "CommandHandle",
    "Executor",
    "FrameError",
    "IllegalTransition",
    "Journal",
    "KeyPair",
    "Keyring",
    "Leaf",
    "NodeCounters",
    "NodeInfo",
    "NodeStatus",
    "Relay",
    "Result",
    "SciError",
    "Security",
    "SecurityError",
    "Status",
    "Targets",
    "TargetError",
    "TreeClosed",
    "TreeEvent",
    "TreeReport",
    "TreeRoot",
    "TreeSettings",
]
