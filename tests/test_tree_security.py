"""CURVE on every link: only enrolled keys get in, each speaks only for its own node, and a
revoked key is cut off.  Real sockets on loopback, one process."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import structlog
import zmq
from structlog.testing import capture_logs

from sci import Leaf, Relay, Status, Targets, TreeSettings, proto
from sci.enrolment import enrol
from sci.proto import Kind, Role
from sci.security import KeyPair, Security, SecurityError, connect_curve
from tests.support.trees import ThreadTree
from tests.support.waiting import until

SETTINGS = TreeSettings(heartbeat_interval=0.2, fanout=2, reattach_grace=1.0)


class Tokens:
    """The root's owner: one-time tokens, each for one node name."""

    def __init__(self) -> None:
        self.valid: dict[str, str] = {}
        self.lock = threading.Lock()

    def issue(self, node: str) -> str:
        token = os.urandom(8).hex()
        self.valid[token] = node
        return token

    def check(self, node: str, role: int, token: str, key: str) -> str | None:
        with self.lock:
            if self.valid.get(token) != node:
                return "unknown, used or expired token"
            del self.valid[token]
        return None


class SecureTree(ThreadTree):
    """A tree whose nodes enrol with one-time tokens before they start, as the daemons do."""

    def __init__(self) -> None:
        self.tokens = Tokens()
        self.root_keys = KeyPair.generate()
        super().__init__(SETTINGS, Security(self.root_keys, self.root_keys.public, enroller=self.tokens.check))

    def security(self, keys: KeyPair | None = None) -> Security:
        return Security(keys or KeyPair.generate(), self.root_keys.public)

    def enrolled(self, node: str, role: Role) -> Security:
        security = self.security()
        enrol(self.root.endpoint, node, role, self.tokens.issue(node), security, timeout=5)
        return security

    def agent(self, name: str, security: Security | None = None) -> Relay:
        return super().agent(name, security or self.enrolled(name, Role.AGENT))

    def host(self, name: str, security: Security | None = None, groups: list[str] | None = None) -> Leaf:
        return super().host(name, security or self.enrolled(name, Role.BACKEND), groups)


@pytest.fixture
def secure() -> Iterator[SecureTree]:
    tree = SecureTree()
    try:
        tree.agent("a0")
        tree.agent("a1")
        until(lambda: {"a0", "a1"} <= tree.up())
        for i in range(4):
            tree.host(f"h{i}")
        tree.root.wait_for_hosts(4, timeout=10)
        yield tree
    finally:
        tree.stop()


def test_enrolled_nodes_form_a_tree_that_carries_commands(secure: SecureTree) -> None:
    results = secure.root.submit("ping", timeout=5).wait(10)
    assert set(results) == {f"h{i}" for i in range(4)} and all(r.status is Status.OK for r in results.values())
    parents = {n.node_id: n.parent for n in secure.root.tree_status()}
    assert {parents[f"h{i}"] for i in range(4)} <= {"a0", "a1"}, parents  # keys reached the agents


def test_a_token_is_good_once_and_for_its_own_name_only(secure: SecureTree) -> None:
    token = secure.tokens.issue("h9")
    with capture_logs() as logs, pytest.raises(SecurityError, match="token"):
        enrol(secure.root.endpoint, "h8", Role.BACKEND, token, secure.security(), timeout=5)
    assert any(e["event"] == "enrolment_refused" for e in logs)
    enrol(secure.root.endpoint, "h9", Role.BACKEND, token, secure.security(), timeout=5)
    with pytest.raises(SecurityError, match="token"):
        enrol(secure.root.endpoint, "h9", Role.BACKEND, token, secure.security(), timeout=5)


def test_a_key_that_is_not_enrolled_is_refused_and_logged(secure: SecureTree) -> None:
    with capture_logs() as logs:
        secure.host("intruder", security=secure.security())
        time.sleep(SETTINGS.dead_after * 2)
        assert "intruder" not in secure.up()
    refusals = [e for e in logs if e["event"] == "attach_refused"]
    assert refusals and refusals[0]["child"] == "intruder"


def hello_as(secure: SecureTree, node: str, keys: Security) -> tuple[Any, proto.Frame]:
    """A raw backend link to the root with ``keys``, saying JOIN (which brings the route-signing
    key) and HELLO as ``node``; the root's answer to them (WELCOME or the first REJECT)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, node.encode())
    connect_curve(sock, keys, secure.root_keys.public)
    sock.connect(secure.root.endpoint)
    sock.send(proto.join(node, Role.BACKEND, 1, None, [], keys.signer.public))
    claim = [node, [1, 1], secure.root.node_id, int(Role.BACKEND), 1, None, [], None]
    sock.send(proto.hello(node, [keys.signer.sign(claim)]))
    while True:
        assert sock.poll(5000)
        answer = proto.decode(sock.recv())
        if answer.kind is not Kind.ASSIGN:
            return sock, answer


def test_an_enrolled_key_cannot_speak_for_another_node(secure: SecureTree) -> None:
    stolen = secure.enrolled("h7", Role.BACKEND)
    with capture_logs() as logs:
        # h7's key, claiming to be h0 (another enrolled host): refused; h0 keeps its place.
        secure.host("h0-impostor", security=stolen)
        sock, answer = hello_as(secure, "h0", stolen)
        sock.close()
    assert answer.kind is Kind.REJECT and "not enrolled" in answer.fields[1]
    assert any(e["event"] == "attach_refused" and e["child"] == "h0" for e in logs)
    assert secure.root.submit("ping", targets=Targets.to("h0"), timeout=5).wait(10)["h0"].ok


def test_a_node_cannot_answer_for_hosts_outside_its_subtree(secure: SecureTree) -> None:
    keys = secure.enrolled("h7", Role.BACKEND)
    sock, welcome = hello_as(secure, "h7", keys)
    assert welcome.kind is Kind.WELCOME
    handle = secure.root.submit("ping", targets=Targets.to("h0"), timeout=5)
    with capture_logs() as logs:
        sock.send(proto.results(welcome.fields[0], handle.id, 0, {"h0": [int(Status.ERROR), "forged", 1]}))
        assert handle.wait(10)["h0"].ok  # the real h0's answer, not the forgery
    sock.close()
    assert any(e["event"] == "results_refused" and e["child"] == "h7" for e in logs)


def test_a_peer_without_curve_cannot_even_connect(secure: SecureTree) -> None:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(secure.root.endpoint)
    sock.send(proto.join("plain", Role.BACKEND, 1, None, [], None))
    assert not sock.poll(1000)  # the handshake never completes: nothing is read, nothing answered
    sock.close()
    assert "plain" not in {n.node_id for n in secure.root.nodes()}
    assert secure.root.submit("ping", timeout=5).wait(10)["h1"].ok  # still serving


def test_a_revoked_node_is_cut_off_at_once_and_stays_out(secure: SecureTree) -> None:
    victim = "h2"
    parent = next(n.parent for n in secure.root.tree_status() if n.node_id == victim)
    with capture_logs() as logs:
        assert secure.root.revoke(victim)
        until(lambda: victim not in secure.up(), timeout=SETTINGS.heartbeat_interval * 5)
        time.sleep(SETTINGS.dead_after * 3)  # its retries, at its parent and at the root, all fail
        assert victim not in secure.up()
    assert parent in {"a0", "a1"}
    events = {e["event"] for e in logs}
    assert "node_revoked" in events and ({"attach_refused", "peer_refused", "frame_refused"} & events)
    result = secure.root.submit("ping", targets=Targets.to(victim), timeout=2).wait(10)[victim]
    assert result.status is Status.UNREACHABLE
    assert not secure.root.revoke(victim)


def test_a_node_whose_key_reaches_its_relay_late_still_attaches_there(secure: SecureTree) -> None:
    keys = secure.enrolled("late", Role.BACKEND)
    relays = [secure.nodes["a0"], secure.nodes["a1"]]
    until(lambda: all(r.security.keyring.key_of("late") for r in relays))
    # As if the KEYS frame to the relays were still on its way when "late" says HELLO.
    for relay in relays:
        relay.security.keyring.remove("late")
    with capture_logs() as logs:
        leaf = secure.host("late", security=keys)
        until(lambda: any(e["event"] == "attach_retried" for e in logs), timeout=SETTINGS.dead_after)
        for relay in relays:
            relay.security.keyring.add("late", keys.keypair.public)
        until(lambda: leaf.up.attached, timeout=SETTINGS.dead_after * 2)
    assert leaf.up.parent_index == 0  # its first choice, not a fallback
    assert not [e for e in logs if e["event"] == "parent_lost"]


def test_the_tree_serves_while_an_enrolment_waits_on_its_database(secure: SecureTree) -> None:
    entered, release = threading.Event(), threading.Event()
    assert secure.root.security is not None
    check = secure.tokens.check

    def slow_check(node: str, role: int, token: str, key: str) -> str | None:
        entered.set()
        release.wait(10)  # as a database lock held elsewhere would
        return check(node, role, token, key)

    secure.root.security.enroller = slow_check
    token = secure.tokens.issue("h8")
    waiting: concurrent.futures.Future[None] = concurrent.futures.Future()
    threading.Thread(target=lambda: waiting.set_result(
        enrol(secure.root.endpoint, "h8", Role.BACKEND, token, secure.security(), timeout=15)), daemon=True).start()
    try:
        assert entered.wait(5)
        results = secure.root.submit("ping", timeout=5).wait(10)
        assert all(r.ok for r in results.values()) and not waiting.done()
    finally:
        release.set()
    waiting.result(15)  # and then it is enrolled


def test_an_enroller_that_fails_is_answered_try_again(secure: SecureTree) -> None:
    def broken(node: str, role: int, token: str, key: str) -> str | None:
        raise RuntimeError("database is locked")

    assert secure.root.security is not None
    secure.root.security.enroller = broken
    with capture_logs() as logs, pytest.raises(SecurityError, match="try again"):
        enrol(secure.root.endpoint, "h8", Role.BACKEND, secure.tokens.issue("h8"), secure.security(), timeout=5)
    assert any(e["event"] == "enroller_failed" for e in logs)
    assert secure.root.submit("ping", timeout=5).wait(10)["h0"].ok


def test_key_files_are_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    pair = KeyPair.load_or_create(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert KeyPair.load_or_create(path) == pair
    path.chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        KeyPair.load_or_create(path)
    path.chmod(0o600)
    other = KeyPair.generate()
    path.write_text(f"public {other.public}\nsecret {pair.secret}\n")
    with pytest.raises(SecurityError, match="does not belong"):
        KeyPair.load_or_create(path)
    assert "secret" not in repr(pair) or pair.secret not in repr(pair)


def test_logs_never_carry_a_secret_key(secure: SecureTree, tmp_path: Path) -> None:
    with capture_logs() as logs:
        pair = KeyPair.load_or_create(tmp_path / "k")
        secure.root.submit("ping", timeout=5).wait(10)
    assert pair.secret not in str(logs) and secure.root_keys.secret not in str(logs)
    structlog.reset_defaults()


class HostileRelay:
    """An enrolled agent gone bad: a raw link that attaches like a relay (JOIN, signed HELLO)
    to ``parent`` and then announces routes it has no right to."""

    def __init__(self, secure: SecureTree, name: str, parent: str) -> None:
        self.keys = secure.enrolled(name, Role.AGENT)
        self.name = name
        if parent == secure.root.node_id:
            endpoint, server_key = secure.root.endpoint, secure.root_keys.public
        else:
            relay = secure.nodes[parent]
            assert isinstance(relay, Relay) and relay.security is not None
            until(lambda: relay.security.keyring.key_of(name) is not None)  # the enrolment's KEYS
            endpoint, server_key = relay.down.connect_endpoint, relay.security.keypair.public
        registrar = self._socket(secure.root.endpoint, secure.root_keys.public, None)
        registrar.send(proto.join(name, Role.AGENT, 1, "tcp://127.0.0.1:1", [], self.keys.signer.public))
        assert registrar.poll(5000) and proto.decode(registrar.recv()).kind is Kind.ASSIGN
        registrar.close()
        if parent != secure.root.node_id:
            until(lambda: relay.security.keyring.sign_key_of(name) is not None)  # the JOIN's KEYS
        self.sock = self._socket(endpoint, server_key, name.encode())
        claim = [name, [1, 1], parent, int(Role.AGENT), 2, "tcp://127.0.0.1:1", [], None]
        self.sock.send(proto.hello(name, [self.keys.signer.sign(claim)]))
        self.session = 0
        while not self.session:
            assert self.sock.poll(5000)
            frame = proto.decode(self.sock.recv())
            assert frame.kind is not Kind.REJECT, frame.fields
            if frame.kind is Kind.WELCOME:
                self.session = frame.fields[0]

    def _socket(self, endpoint: str, server_key: str, identity: bytes | None) -> Any:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        connect_curve(sock, self.keys, server_key)
        sock.connect(endpoint)
        return sock

    def announce(self, *entries: list[Any]) -> None:
        self.sock.send(proto.routes(self.session, list(entries), []))

    def close(self) -> None:
        self.sock.close()


def route_of(node: Relay | Any, host: str) -> str | None:
    return node.down.routes.child_of(host)  # type: ignore[no-any-return]


@pytest.mark.parametrize("where", ["root", "a0"])
def test_a_hostile_relay_cannot_take_another_hosts_route(secure: SecureTree, where: str) -> None:
    """Before route claims were signed, an enrolled agent could announce any host's entry at a
    higher seq and its parents routed that host's commands to it.  Now a forged claim is
    refused wherever it is announced, and a real claim replayed from elsewhere waits unused
    (its parent is not below the relay that replays it)."""
    parent = secure.root.node_id if where == "root" else where
    listener = secure.root if where == "root" else secure.nodes[where]
    placed = {n.node_id: n.parent for n in secure.root.tree_status()}
    victims = sorted(h for h in placed if h.startswith("h"))
    before = {h: route_of(listener, h) for h in victims}
    evil = HostileRelay(secure, "evil", parent)
    try:
        with capture_logs() as logs:
            for host in victims:
                real = secure.root.down.routes.get(host)
                assert real is not None
                forged = [*real.entry[:7], None]
                forged[1], forged[2] = [2**63 - 1, 0], "evil"
                evil.announce(evil.keys.signer.sign(forged))  # signed, but with the wrong key
                evil.announce([*real.entry])  # the host's real claim, replayed
            evil.announce([*forged[:7], real.entry[7]])  # a real signature on other content
            until(lambda: sum(1 for e in logs if e["event"] == "route_claim_refused") == len(victims) + 1)
        assert {h: route_of(listener, h) for h in victims} == before
        assert listener.counters.totals["routes_refused:forged"] == len(victims) + 1
        results = secure.root.submit("ping", targets=Targets.to(*victims), timeout=5).wait(10)
        assert all(results[h].ok for h in victims), results
        assert "evil" in secure.up()  # its own route stands: it can drop only its own traffic
    finally:
        evil.close()


def test_a_claim_waits_for_its_signing_key_and_is_taken_when_it_comes(secure: SecureTree) -> None:
    """The KEYS push that brings a new node's signing key races its first attach below: a relay
    that has no key for a claim yet holds it, and routes it when the key arrives."""
    keys = secure.enrolled("late", Role.BACKEND)
    relays = [secure.nodes["a0"], secure.nodes["a1"]]
    for relay in relays:
        relay.security.keyring.add_signer = lambda node, key: None  # type: ignore[method-assign]
    leaf = secure.host("late", security=keys)
    until(lambda: leaf.up.attached, timeout=SETTINGS.dead_after * 2)
    parent = next(r for r in relays if r.node_id == leaf.up.parent)
    time.sleep(SETTINGS.heartbeat_interval * 2)
    assert route_of(parent, "late") is None  # attached, but its claim unchecked: not routed
    del parent.security.keyring.add_signer
    parent.reactor.call_soon_threadsafe(
        lambda: parent._keys(0, {}, [], {"late": keys.signer.public}))
    until(lambda: route_of(parent, "late") == "late")
    until(lambda: route_of(secure.root, "late") == parent.node_id)  # the parent's ROUTES reach the root after
    assert secure.root.submit("ping", targets=Targets.to("late"), timeout=5).wait(10)["late"].ok
