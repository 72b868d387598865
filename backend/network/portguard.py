"""The firewalled ports' own addresses at layer 2: nftables' bridge family, in one namespace.

iptables judges IP packets only, so without this a guest could still answer ARP for another
port's IP (its neighbours would then send that port's traffic to it) or send frames under
another MAC (the bridge would learn it there).  The bridge family's prerouting hook sees every
frame a port sends before the bridge learns from it or forwards it: the chain ``port-guard``
of table ``bridge cloudland`` drops, from a tap in set ``guarded``,

- a frame whose (tap, source MAC) is not in set ``own-mac``;
- ARP whose (tap, sender MAC, sender IP) is not in set ``own-arp``: the port's MAC with its
  IP, or with 0.0.0.0 (the address-conflict probe of RFC 5227, sent before a guest takes an
  address).

The two rules never change; ports are elements of the sets, so a packet costs two hash look-ups
however many ports the host has, and a port that comes or goes changes only its own elements.
Each change is one nft transaction: packets meet the old elements or the new.  The first
change of this object's life writes the table whole (its sets flushed and filled in the same
transaction).  With no port to guard, the table goes.  ``nft`` runs as ``nft -j -f -`` with the
batch as JSON on its stdin: an argument list, and the taps, MACs and IPs are JSON values, never
text nft parses.  It is run from the thread that entered the namespace (``namespaces.run_in``):
a child process starts in its parent thread's namespace.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Iterable

import structlog

from .exceptions import FirewallError, KernelUnsupported
from .firewall_state import PortFirewall

__all__ = ["PortGuard"]

log = structlog.get_logger("backend.network")

NFT = "nft"
FAMILY, TABLE, CHAIN = "bridge", "cloudland", "port-guard"
#: the bridge family's filter priority: before the bridge learns or forwards
PRIORITY = -200
TIMEOUT_S = 30.0
#: the sender IP of an RFC 5227 address probe
UNSPECIFIED = "0.0.0.0"
GUARDED, OWN_MAC, OWN_ARP = "guarded", "own-mac", "own-arp"
#: each set's element type
SETS = {GUARDED: "ifname", OWN_MAC: ["ifname", "ether_addr"], OWN_ARP: ["ifname", "ether_addr", "ipv4_addr"]}
_TABLE = {"family": FAMILY, "name": TABLE}


class PortGuard:
    """The layer-2 guard of the namespace this object's ``apply`` is called in (``where`` names it in errors)."""

    def __init__(self, where: str) -> None:
        self._where = where
        #: the ports as the sets hold them since this object last wrote them; None: not known
        #: (a restarted backend writes the table once, whole, in one transaction)
        self._written: frozenset[tuple[str, str, str]] | None = None

    def apply(self, ports: Iterable[PortFirewall]) -> None:
        wanted = frozenset((p.tap, p.mac.lower(), p.ip) for p in ports)
        written, self._written = self._written, None
        if wanted == written:
            self._written = written
            return
        if not wanted:
            try:
                # Adding the table first makes the delete succeed whether or not it was there.
                self._run([{"add": {"table": _TABLE}}, {"delete": {"table": _TABLE}}])
            except KernelUnsupported:
                pass  # without nft, no guard was ever written here
            self._written = wanted
            log.info("port_guard_removed", netns=self._where)
            return
        new = _elements(wanted)
        if not written:  # not known, or no table: with no port, there is none
            batch = _skeleton() + [{"add": {"element": {**_set(name), "elem": _written_as(elems)}}}
                                   for name, elems in new.items()]
        else:
            old = _elements(written)
            batch = [{"delete": {"element": {**_set(name), "elem": _written_as(old[name] - new[name])}}}
                     for name in SETS if old[name] - new[name]]
            batch += [{"add": {"element": {**_set(name), "elem": _written_as(new[name] - old[name])}}}
                      for name in SETS if new[name] - old[name]]
        self._run(batch)
        self._written = wanted
        log.info("port_guard_applied", ports=len(wanted), added=len(wanted - (written or frozenset())),
                 removed=len((written or frozenset()) - wanted), netns=self._where)

    def _run(self, batch: list[dict[str, Any]]) -> None:
        try:
            proc = subprocess.run([NFT, "-j", "-f", "-"], input=json.dumps({"nftables": batch}), capture_output=True,
                                  text=True, timeout=TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise KernelUnsupported(f"port guard in {self._where}: {NFT} is not installed (Debian: nftables), so "
                                    "the firewalled ports' ARP and MACs cannot be checked") from None
        except subprocess.TimeoutExpired:
            raise FirewallError(f"port guard in {self._where}: {NFT} took over {TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            raise FirewallError(f"port guard in {self._where}: {NFT} exited {proc.returncode}: "
                                f"{proc.stderr.strip()[-500:]}")


def _set(name: str) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, "name": name}


def _elements(ports: frozenset[tuple[str, str, str]]) -> dict[str, set[Any]]:
    """Each set's elements for ``ports`` (tap, MAC, IP), as nft's JSON writes them."""
    return {
        GUARDED: {tap for tap, _mac, _ip in ports},
        OWN_MAC: {(tap, mac) for tap, mac, _ip in ports},
        OWN_ARP: {(tap, mac, address) for tap, mac, ip in ports for address in (ip, UNSPECIFIED)},
    }


def _written_as(elements: set[Any]) -> list[Any]:
    """Elements as nft's JSON writes them: a tuple is a concatenation."""
    return [e if isinstance(e, str) else {"concat": list(e)} for e in sorted(elements)]


def _skeleton() -> list[dict[str, Any]]:
    """The table, its sets (emptied) and its chain (its two rules written anew)."""
    chain = {"family": FAMILY, "table": TABLE, "name": CHAIN}
    iifname = {"meta": {"key": "iifname"}}
    guarded = {"match": {"op": "==", "left": iifname, "right": f"@{GUARDED}"}}
    batch: list[dict[str, Any]] = [{"add": {"table": _TABLE}}]
    for name, kind in SETS.items():
        batch += [{"add": {"set": {**_set(name), "type": kind}}}, {"flush": {"set": _set(name)}}]
    batch += [
        {"add": {"chain": {**chain, "type": "filter", "hook": "prerouting", "prio": PRIORITY, "policy": "accept"}}},
        {"flush": {"chain": chain}},
        _rule(guarded, _not_in([iifname, _payload("ether", "saddr")], OWN_MAC)),
        _rule(guarded, {"match": {"op": "==", "left": _payload("ether", "type"), "right": "arp"}},
              _not_in([iifname, _payload("arp", "saddr ether"), _payload("arp", "saddr ip")], OWN_ARP)),
    ]
    return batch


def _rule(*matches: dict[str, Any]) -> dict[str, Any]:
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": CHAIN, "expr": [*matches, {"drop": None}]}}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _not_in(keys: list[dict[str, Any]], set_name: str) -> dict[str, Any]:
    return {"match": {"op": "!=", "left": {"concat": keys}, "right": f"@{set_name}"}}
