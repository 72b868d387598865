"""The message tree as the console draws it: one branch per relay (the root and each agent), with
its hosts counted by state, so that 10,000 hosts make a hundred-odd lines until one is opened."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = ["Branch", "branches", "troubled"]

#: the order hosts are listed in within a branch: those that need a look first
_URGENCY = {"down": 0, "silent": 1, "suspect": 2, "up": 3}


@dataclass
class Branch:
    """A relay and the hosts (backends) directly under it."""

    relay: dict[str, Any]
    hosts: list[dict[str, Any]] = field(default_factory=list)
    #: the agents directly under it
    relays: list["Branch"] = field(default_factory=list)
    #: how many of its hosts are in each state
    states: Counter[str] = field(default_factory=Counter)
    #: its hosts that reparented lately
    moved: set[str] = field(default_factory=set)
    #: whether the relay itself reparented lately
    relay_moved: bool = False


def branches(nodes: Iterable[dict[str, Any]], moved: set[str]) -> list[Branch]:
    """The tree's nodes (as ``GET /v1/tree`` gives them) as branches, each agent's in its parent's:
    the root's first, then those of agents under no relay now (the tree gives a down node no
    parent), then one of the hosts under no relay."""
    nodes = list(nodes)
    relays = {n["node_id"]: Branch(n) for n in nodes if n["role"] != "backend"}
    detached = Branch({"node_id": "", "role": "detached", "parent": None, "level": 0, "children": 0,
                       "heartbeat_age": None, "state": "down"})
    for node in nodes:
        if node["role"] == "backend":
            branch = relays.get(node["parent"], detached)
            branch.hosts.append(node)
            branch.states[node["state"]] += 1
            if node["node_id"] in moved:
                branch.moved.add(node["node_id"])
    for branch in [*relays.values(), detached]:
        branch.hosts.sort(key=lambda h: (_URGENCY.get(h["state"], 0), h["node_id"] not in moved, h["node_id"]))
        branch.relay_moved = branch.relay["node_id"] in moved
    tops: list[Branch] = []
    for branch in sorted(relays.values(), key=lambda b: (b.relay["role"] != "root", b.relay["node_id"])):
        parent = relays.get(branch.relay["parent"])
        (parent.relays if parent is not None else tops).append(branch)
    return tops + [detached] if detached.hosts else tops


def troubled(nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes that are not up, the most urgent first."""
    return sorted((n for n in nodes if n["state"] != "up"),
                  key=lambda n: (_URGENCY.get(n["state"], 0), n["node_id"]))
