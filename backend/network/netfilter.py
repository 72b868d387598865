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
``_LOCK`` and re-opens the table in the namespace it runs in (``fresh_tables``).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import iptc

from .exceptions import NetworkError
from .namespaces import run_in

__all__ = ["HostEgress", "RouterNat", "apply_host_egress", "apply_router_nat"]

PRE, POST, EGRESS = "cl-pre", "cl-post", "cl-egress"
_LOCK = threading.Lock()


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


@contextlib.contextmanager
def fresh_tables() -> Iterator[dict[str, Any]]:
    """Every iptables table of the namespace this thread is in, by name, for one change (under ``_LOCK``).

    python-iptables keeps one table object per table name, process-wide, and a rule's target
    is looked up in every table it holds.  So every table gets a fresh handle of this namespace
    first (not one of the last namespace used), and every handle is closed after: a handle holds
    a socket of its namespace, which would keep a deleted router namespace alive, and its
    veths with it."""
    with _LOCK:
        tables: dict[str, Any] = {}
        try:
            for name in iptc.Table.ALL:
                if iptc.is_table_available(name):
                    table = iptc.Table(name, autocommit=False)
                    tables[name] = table
                    table.refresh()
            yield tables
        finally:
            for table in tables.values():
                table.close()


@contextlib.contextmanager
def _nat_table(namespace: str | None) -> Iterator[Any]:
    """The nat table of the namespace this thread is in, for one change."""
    try:
        with fresh_tables():
            yield iptc.Table(iptc.Table.NAT, autocommit=False)
    except iptc.IPTCError as exc:
        raise NetworkError(f"nat rules in {namespace or 'this namespace'}: {exc}") from exc


def _rebuild(namespace: str | None, chains: dict[str, str], rules: list[tuple[str, Callable[[Any], None]]]) -> None:
    """Make the nat table's ``chains`` (each jumped to from its built-in chain) hold exactly ``rules``."""

    def work() -> None:
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
