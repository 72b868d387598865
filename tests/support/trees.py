"""A tree in one process for tests: a real root, relays and leaves on loopback, each in its thread."""

from __future__ import annotations

import threading

from backend.ops import system
from backend.registry import OpRegistry
from sci import Journal, Leaf, Relay, Security, TreeRoot, TreeSettings
from tests.support.waiting import until

__all__ = ["ThreadTree"]


class ThreadTree:
    def __init__(self, settings: TreeSettings, security: Security | None = None) -> None:
        self.settings = settings
        self.root = TreeRoot("tcp://127.0.0.1:0", settings, security=security).start()
        self.nodes: dict[str, Relay | Leaf] = {}
        self.threads: list[threading.Thread] = []

    def spawn(self, node: Relay | Leaf) -> None:
        self.nodes[node.node_id] = node
        thread = threading.Thread(target=node.run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def agent(self, name: str, security: Security | None = None) -> Relay:
        relay = Relay(name, self.root.endpoint, "tcp://127.0.0.1:0", self.settings, security=security)
        self.spawn(relay)
        return relay

    def host(self, name: str, security: Security | None = None, groups: list[str] | None = None) -> Leaf:
        """A leaf answering the backend's system ops (ping, info)."""
        registry = OpRegistry(2)
        system.register(registry)
        leaf = Leaf(name, self.root.endpoint, self.settings, registry, Journal(None), groups=groups,
                    security=security)
        self.spawn(leaf)
        return leaf

    def up(self) -> set[str]:
        return {n.node_id for n in self.root.nodes() if n.up}

    def wait_agents(self, names: list[str]) -> None:
        until(lambda: set(names) <= self.up(), 10, f"agents {names} to attach")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for thread in self.threads:
            thread.join(5)
        self.root.stop()
