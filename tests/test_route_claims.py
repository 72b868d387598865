"""Route claims: what a parent takes from a child, without sockets (the tree's own tests in
test_tree_security.py run the same rules over CURVE links)."""

from __future__ import annotations

from typing import Any

from sci.claims import ClaimChecker, ClaimSigner
from sci.counters import Counters
from sci.proto import Role
from sci.routes import RouteTable
from sci.security import KeyPair

SIGNERS = {name: ClaimSigner(KeyPair.generate().secret) for name in ("r1", "r2", "h1", "h2", "h3")}


def claim(node: str, parent: str, seq: int = 1, signer: str | None = None) -> list[Any]:
    role = Role.BACKEND if node.startswith("h") else Role.AGENT
    entry = [node, [7, seq], parent, int(role), 2, None, [], None]
    return SIGNERS[signer or node].sign(entry)


class Parent:
    """Node "p": its route table, and a checker whose keyring holds ``known`` signing keys."""

    def __init__(self, known: set[str] | None = None) -> None:
        self.keys = {n: s.public for n, s in SIGNERS.items() if known is None or n in known}
        self.routes = RouteTable()
        self.counters = Counters()
        self.claims = ClaimChecker("p", self.keys.get, self.routes, self.counters)

    def hello(self, child: str, *entries: list[Any], session: int = 1) -> list[str]:
        taken = self.claims.take(child, session, list(entries))
        self.routes.add(child, taken)
        return [e[0] for e in taken]

    def key_came(self, node: str) -> dict[str, list[str]]:
        self.keys[node] = SIGNERS[node].public
        taken = self.claims.keys_changed([node])
        for child, entries in taken.items():
            self.routes.add(child, entries)
        return {child: [e[0] for e in entries] for child, entries in taken.items()}


def test_a_child_and_its_subtree_are_taken_in_any_order() -> None:
    parent = Parent()
    # The subtree's order after routes were dropped and added again: children before parents.
    assert sorted(parent.hello("r1", claim("r1", "p"), claim("h2", "r2"), claim("r2", "r1"), claim("h1", "r1"))) \
        == ["h1", "h2", "r1", "r2"]
    assert parent.routes.child_of("h2") == "r1"
    assert parent.claims.take("r1", 1, [claim("h3", "r2")]) == [claim("h3", "r2")]


def test_a_claim_signed_by_another_key_is_refused_and_counted() -> None:
    parent = Parent()
    parent.hello("r1", claim("r1", "p"))
    parent.hello("r2", claim("r2", "p"), claim("h1", "r2"))
    assert parent.hello("r1", claim("h1", "r1", seq=2**40, signer="r1"), session=1) == []
    assert parent.routes.child_of("h1") == "r2"
    assert parent.counters.totals["routes_refused:forged"] == 1
    altered = claim("h1", "r2")
    altered[4] = 1  # a field changed under a good signature
    assert parent.hello("r2", altered) == []
    assert parent.counters.totals["routes_refused:forged"] == 2


def test_a_child_must_claim_this_node_as_its_parent() -> None:
    parent = Parent()
    assert parent.hello("r1", claim("r1", "elsewhere")) == []
    assert parent.routes.child_of("r1") is None


def test_a_real_claim_replayed_through_another_child_waits_unused() -> None:
    """r1 carried h1 once; h1's subtree moved to r2 with its claim unchanged (an ancestor moved,
    not h1).  r1 announcing that same claim again names a parent that is not below r1."""
    parent = Parent()
    parent.hello("r1", claim("r1", "p"))
    parent.hello("r2", claim("r2", "p"), claim("h1", "r2"))
    assert parent.hello("r1", claim("h1", "r2")) == []
    assert parent.routes.child_of("h1") == "r2"
    assert "routes_refused:forged" not in parent.counters.totals


def test_a_claim_without_a_known_key_waits_for_it() -> None:
    parent = Parent(known={"r1", "h2"})
    assert parent.hello("r1", claim("r1", "p"), claim("h1", "r1"), claim("h2", "r1")) == ["r1", "h2"]
    assert parent.key_came("h1") == {"r1": ["h1"]}
    assert parent.routes.child_of("h1") == "r1"


def test_a_subtree_waits_with_the_relay_whose_key_is_missing() -> None:
    parent = Parent(known={"r1", "h1"})
    assert parent.hello("r1", claim("r1", "p"), claim("r2", "r1"), claim("h1", "r2")) == ["r1"]
    assert parent.key_came("r2") == {"r1": ["r2", "h1"]}


def test_what_waits_is_void_once_withdrawn_or_the_child_is_gone() -> None:
    parent = Parent(known={"r1", "r2"})
    parent.hello("r1", claim("r1", "p"), claim("h1", "r1"), claim("h2", "r1"))
    parent.claims.withdrawn("r1", ["h1"])
    assert parent.key_came("h1") == {}
    parent.claims.forget("r1")
    assert parent.key_came("h2") == {}
    # A new session of the same child starts afresh too.
    parent.hello("r2", claim("r2", "p"), claim("h3", "r2"), session=1)
    parent.hello("r2", claim("r2", "p", seq=2), session=2)
    assert parent.key_came("h3") == {}
