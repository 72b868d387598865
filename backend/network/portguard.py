"""The firewalled ports' own addresses at layer 2: nftables' bridge family, in one namespace.

iptables judges IP packets only, so without this a guest could still answer ARP for another
port's IP (its neighbours would then send that port's traffic to it) or send frames under
another MAC (the bridge would learn it there).  The bridge family's prerouting hook sees every
frame a port sends before the bridge learns from it or forwards it: the chain ``port-guard``
of table ``bridge cloudland`` drops, per firewalled port,

- a frame from its tap with another source MAC than the port's;
- ARP from its tap whose sender MAC is not the port's, or whose sender IP is neither the
  port's nor 0.0.0.0 (the address-conflict probe of RFC 5227, sent before a guest takes an
  address).

The chain is written whole in one nft transaction (its flush and every rule in one batch):
packets meet the old rules or the new.  With no port to guard, the table goes.  ``nft`` runs as
``nft -j -f -`` with the batch as JSON on its stdin: an argument list, and the taps, MACs and IPs
are JSON values, never text nft parses.  It is run from the thread that entered the namespace
(``namespaces.run_in``): a child process starts in its parent thread's namespace.
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


class PortGuard:
    """The layer-2 guard of the namespace this object's ``apply`` is called in (``where`` names it in errors)."""

    def __init__(self, where: str) -> None:
        self._where = where
        #: the ports as the chain holds them since this object last wrote it; None: not known
        #: (a restarted backend writes it once, the same rules in one transaction)
        self._written: tuple[tuple[str, str, str], ...] | None = None

    def apply(self, ports: Iterable[PortFirewall]) -> None:
        wanted = tuple(sorted({(p.tap, p.mac.lower(), p.ip) for p in ports}))
        if wanted == self._written:
            return
        self._written = None
        table = {"family": FAMILY, "name": TABLE}
        if not wanted:
            try:
                # Adding the table first makes the delete succeed whether or not it was there.
                self._run([{"add": {"table": table}}, {"delete": {"table": table}}])
            except KernelUnsupported:
                pass  # without nft, no guard was ever written here
            self._written = wanted
            log.info("port_guard_removed", netns=self._where)
            return
        chain = {"family": FAMILY, "table": TABLE, "name": CHAIN}
        batch: list[dict[str, Any]] = [
            {"add": {"table": table}},
            {"add": {"chain": {**chain, "type": "filter", "hook": "prerouting", "prio": PRIORITY,
                               "policy": "accept"}}},
            {"flush": {"chain": chain}},
        ]
        for tap, mac, ip in wanted:
            batch += [_rule(tap, _differs("ether", "saddr", mac)),
                      _rule(tap, _is_arp(), _differs("arp", "saddr ether", mac)),
                      _rule(tap, _is_arp(), _differs("arp", "saddr ip", {"set": sorted({ip, UNSPECIFIED})}))]
        self._run(batch)
        self._written = wanted
        log.info("port_guard_applied", ports=len(wanted), netns=self._where)

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


def _rule(tap: str, *matches: dict[str, Any]) -> dict[str, Any]:
    expr = [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": tap}}, *matches, {"drop": None}]
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": CHAIN, "expr": expr}}}


def _is_arp() -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "type"}}, "right": "arp"}}


def _differs(protocol: str, field: str, value: Any) -> dict[str, Any]:
    return {"match": {"op": "!=", "left": {"payload": {"protocol": protocol, "field": field}}, "right": value}}
