"""The network driver's NAT (in router namespaces and the host's egress), and the one way in to
python-iptables for every table (``fresh_tables``; the port firewall, ``firewall.py``, uses it too).

python-iptables (libiptc, the legacy backend) in the namespace the rules belong to
(``namespaces.run_in``).  Every chain is the driver's own and is rebuilt whole in one commit
of its table, so packets see the old rules or the new ones, never a half: a floating IP that
moves is never answered by both, nor by neither for longer than the commit.

- In a router namespace: ``cl-pre`` (from PREROUTING) DNATs each floating IP to its port's
  fixed IP; ``cl-post`` (from POSTROUTING) SNATs a port with a floating IP to it on the way out
  of the external leg, and everything else leaving by the transit leg to the namespace's
  transit address (the network's egress, when its router does SNAT).
- In the hypervisor: ``cl-egress`` (from POSTROUTING) masquerades what comes from the transit
  range out of the external interface, to the host's own address there.

libiptc's handles are cached per table by python-iptables, process-wide: every use holds
``_LOCK`` and re-opens the table in the namespace it runs in (``fresh_tables``), and holds the
host's xtables lock (``/run/xtables.lock``, as ``iptables -w`` does) from its read to its commit,
so that no other iptables user's change falls between them and is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import iptc

from .exceptions import NetworkError
from .namespaces import run_in

__all__ = ["HostEgress", "RouterNat", "apply_host_egress", "apply_router_nat"]

PRE, POST, EGRESS = "cl-pre", "cl-post", "cl-egress"
_LOCK = threading.Lock()
#: the lock every iptables command takes (iptables -w) before it reads a table to change it: libiptc
#: replaces a table whole, so a change made between another's read and commit would be lost
XTABLES_LOCK = "/run/xtables.lock"
XTABLES_LOCK_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class RouterNat:
    #: (floating IP, fixed IP) of the ports on this host
    floating: tuple[tuple[str, str], ...]
    #: the router namespace's external leg (where floating IPs live)
    external_leg: str
    #: the subnets whose egress is SNATed to ``transit_address``; empty: no SNAT
    snat_sources: tuple[str, ...]
    transit_leg: str
    transit_address: str


@dataclass(frozen=True, slots=True)
class HostEgress:
    transit_cidr: str
    #: the host's interface on the external network (an empty name: no egress rule)
    external_interface: str


def apply_router_nat(namespace: str, nat: RouterNat) -> None:
    def rules() -> list[tuple[str, Callable[[Any], None]]]:
        out: list[tuple[str, Callable[[Any], None]]] = []
        for floating, fixed in nat.floating:
            out.append((PRE, _dnat(floating, fixed, nat.external_leg)))
        for floating, fixed in nat.floating:
            out.append((POST, _snat(f"{fixed}/32", nat.external_leg, floating)))
        for cidr in nat.snat_sources:
            out.append((POST, _snat(cidr, nat.transit_leg, nat.transit_address)))
        return out

    _rebuild(namespace, {PRE: "PREROUTING", POST: "POSTROUTING"}, rules())


def apply_host_egress(namespace: str | None, egress: HostEgress) -> None:
    rules: list[tuple[str, Callable[[Any], None]]] = []
    if egress.external_interface:
        rules.append((EGRESS, _masquerade(egress.transit_cidr, egress.external_interface)))
    _rebuild(namespace, {EGRESS: "POSTROUTING"}, rules)


def _dnat(floating: str, fixed: str, leg: str) -> Callable[[Any], None]:
    def fill(rule: Any) -> None:
        rule.dst = f"{floating}/32"
        rule.in_interface = leg
        rule.create_target("DNAT").to_destination = fixed
    return fill


def _snat(source: str, out: str, to: str) -> Callable[[Any], None]:
    def fill(rule: Any) -> None:
        rule.src = source
        rule.out_interface = out
        rule.create_target("SNAT").to_source = to
    return fill


def _masquerade(source: str, out: str) -> Callable[[Any], None]:
    def fill(rule: Any) -> None:
        rule.src = source
        rule.out_interface = out
        rule.create_target("MASQUERADE")
    return fill


def loaded_tables(ipv6: bool = False) -> set[str]:
    """The iptables (``ipv6``: ip6tables) tables this thread's namespace holds.

    The kernel makes a table in a namespace the first time anything opens it, and from then on
    every packet of the namespace passes through its hooks (the nat table's means conntrack
    and NAT for every bridged packet too): a table nobody needs must never be opened."""
    try:
        # thread-self: /proc/self/net is the namespace of the process's first thread, not this one's
        with open(f"/proc/thread-self/net/ip{'6' if ipv6 else ''}_tables_names") as f:
            return {line.strip() for line in f if line.strip()}
    except FileNotFoundError:  # no ip_tables (ip6_tables) module: no table anywhere
        return set()


@contextlib.contextmanager
def fresh_tables(needed: Iterable[str], ipv6: bool = False) -> Iterator[dict[str, Any]]:
    """The iptables (``ipv6``: ip6tables) tables of the namespace this thread is in, by name, for
    one change (under ``_LOCK``): the ``needed`` ones and those the namespace already holds, no other.

    python-iptables keeps one table object per table name, process-wide, and a rule's target
    is looked up in every table it believes available.  So each table used gets a fresh handle
    of this namespace first (not one of the last namespace used), the others are reported
    unavailable for the change (looking a target up in them would make them here), and every
    handle is closed after: a handle holds a socket of its namespace, which would keep a
    deleted router namespace alive, and its veths with it.  A needed table the kernel lacks is
    missing from the result."""
    kind = iptc.Table6 if ipv6 else iptc.Table
    with _LOCK, _xtables_lock():
        present = loaded_tables(ipv6) | set(needed)
        available = kind.existing_table_names
        known = dict(available)
        tables: dict[str, Any] = {}
        try:
            for name in kind.ALL:
                available[name] = False
            for name in kind.ALL:
                if name not in present:
                    continue
                try:
                    table = kind(name, autocommit=False)
                    table.refresh()
                except iptc.IPTCError:
                    continue  # not in this kernel
                tables[name] = table
                available[name] = True
            yield tables
        finally:
            for table in tables.values():
                table.close()
            available.clear()
            available.update(known)


@contextlib.contextmanager
def _xtables_lock() -> Iterator[None]:
    """The host's xtables lock, as iptables takes it: waited for a while, then a named error."""
    try:
        fd = os.open(XTABLES_LOCK, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise NetworkError(f"open {XTABLES_LOCK}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + XTABLES_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise NetworkError(f"{XTABLES_LOCK} held by another iptables user for {XTABLES_LOCK_WAIT_S:g} s")
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _nat_table(namespace: str | None) -> Iterator[Any]:
    """The nat table of the namespace this thread is in, for one change."""
    try:
        with fresh_tables([iptc.Table.NAT]) as tables:
            if iptc.Table.NAT not in tables:
                raise NetworkError("the kernel has no nat table (iptable_nat)")
            yield tables[iptc.Table.NAT]
    except iptc.IPTCError as exc:
        raise NetworkError(f"nat rules in {namespace or 'this namespace'}: {exc}") from exc


def _rebuild(namespace: str | None, chains: dict[str, str], rules: list[tuple[str, Callable[[Any], None]]]) -> None:
    """Make the nat table's ``chains`` (each jumped to from its built-in chain) hold exactly ``rules``."""

    def work() -> None:
        if not rules and iptc.Table.NAT not in loaded_tables():
            return  # nothing to remove, and opening the table would make it
        with _nat_table(namespace) as table:
            for name, builtin in chains.items():
                if table.is_chain(name):
                    iptc.Chain(table, name).flush()
                else:
                    table.create_chain(name)
                hook = iptc.Chain(table, builtin)
                if not any(r.target.name == name for r in hook.rules):
                    jump = iptc.Rule()
                    jump.create_target(name)
                    hook.insert_rule(jump)
            for name, fill in rules:
                rule = iptc.Rule()
                fill(rule)
                iptc.Chain(table, name).append_rule(rule)
            table.commit()

    run_in(namespace, work)
