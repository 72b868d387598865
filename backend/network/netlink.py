"""The only module that talks to the kernel's network stack: netlink through pyroute2.

``Netlink`` is one namespace's handle (the hypervisor's own, or a router namespace) with typed
calls for what the driver builds: bridges, VXLAN devices, veth pairs, bridge FDB entries,
permanent neighbours, addresses and routes.  It validates nothing (its callers pass checked
values) and every failure leaves as a named ``NetworkError`` through ``exceptions.from_errno``.

Namespaces are named files under /run/netns (``ip netns``'s convention, so operators can look
with ``ip netns exec``).  What netlink has no call for (sysctls, a gratuitous ARP) is done on a
thread inside the namespace (``namespaces.run_in``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any, Iterator

import structlog
from pyroute2 import NetNS, IPRoute, netns as pynetns
from pyroute2.netlink.exceptions import NetlinkError

from .exceptions import LinkNotFound, NetworkError, from_errno
from .namespaces import namespace_path, run_in

__all__ = ["Link", "Netlink", "NUD_PERMANENT", "create_namespace", "namespace_path", "namespaces",
           "remove_namespace"]

log = structlog.get_logger("backend.network")

NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NTF_MASTER = 0x04
AF_INET = 2
ETH_P_ARP = 0x0806
RT_SCOPE_LINK = 253


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    index: int
    kind: str | None
    #: the name of the bridge it is enslaved to
    master: str | None
    mtu: int
    mac: str
    up: bool
    #: for a VXLAN device: (vni, local address, destination port, learning, proxy)
    vxlan: tuple[int, str, int, bool, bool] | None = None


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        raise from_errno(exc.code, str(exc.args[1] if len(exc.args) > 1 else exc), what) from exc
    except OSError as exc:
        raise from_errno(exc.errno or 0, exc.strerror or str(exc), what) from exc


def namespaces() -> set[str]:
    return set(pynetns.listnetns())


def create_namespace(name: str) -> None:
    with _mapped(f"create namespace {name}"):
        pynetns.create(name)


def remove_namespace(name: str) -> None:
    with _mapped(f"remove namespace {name}"):
        pynetns.remove(name)


def _decoded(msg: Any, master: str | None) -> Link:
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    vxlan = None
    if kind == "vxlan":
        data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        vxlan = (data.get("IFLA_VXLAN_ID"), data.get("IFLA_VXLAN_LOCAL"), data.get("IFLA_VXLAN_PORT"),
                 bool(data.get("IFLA_VXLAN_LEARNING")), bool(data.get("IFLA_VXLAN_PROXY")))
    return Link(name=msg.get("IFLA_IFNAME"), index=msg["index"], kind=kind, master=master, mtu=msg.get("IFLA_MTU"),
                mac=msg.get("IFLA_ADDRESS") or "", up=bool(msg["flags"] & 1), vxlan=vxlan)


class Netlink:
    """Netlink in one namespace: ``netns`` a name under /run/netns, or None for this process's."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        with _mapped(f"open netlink in {netns or 'this namespace'}"):
            self._ipr: Any = NetNS(netns) if netns else IPRoute()
        #: the last dump of links, until this handle changes one (``forget_links``)
        self._links: dict[str, Link] | None = None

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- links ------------------------------------------------------------------------------

    def links(self) -> dict[str, Link]:
        """The namespace's links by name (a copy the caller may change).

        A dump is decoded once and kept until this handle changes a link, so the several reads
        of one sync cost one dump (decoding grows with the host's ports).  A handle lives for one
        change: links others make meanwhile are the next handle's."""
        if self._links is None:
            self._links = self._dump_links()
        return dict(self._links)

    def forget_links(self) -> None:
        """Links changed other than through this handle (a namespace removed with its veths)."""
        self._links = None

    def link(self, name: str) -> Link | None:
        """One link by name, or None: asked of the kernel alone, so its cost does not grow with
        the namespace's links as a dump's does (the last dump, while it holds, answers instead)."""
        if self._links is not None:
            return self._links.get(name)
        with _mapped(f"look up link {name}"):
            try:
                msg = self._ipr.link("get", ifname=name)[0]
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return None
                raise
            master = msg.get("IFLA_MASTER")
            master_name = self._ipr.link("get", index=master)[0].get("IFLA_IFNAME") if master else None
        return _decoded(msg, master_name)

    def _dump_links(self) -> dict[str, Link]:
        with _mapped("list links"):
            raw = list(self._ipr.get_links())
        names = {msg["index"]: msg.get("IFLA_IFNAME") for msg in raw}
        out: dict[str, Link] = {}
        for msg in raw:
            master = msg.get("IFLA_MASTER")
            link = _decoded(msg, names.get(master) if master else None)
            out[link.name] = link
        return out

    def _index(self, name: str) -> int:
        with _mapped(f"look up link {name}"):
            found = self._ipr.link_lookup(ifname=name)
        if not found:
            raise from_errno(19, "no such device", f"link {name}")
        return int(found[0])

    def add_bridge(self, name: str, mtu: int) -> None:
        self._links = None
        with _mapped(f"create bridge {name}"):
            # No STP (a bridge per segment has no loops) and no forwarding delay: a port
            # forwards as soon as it is plugged.
            self._ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0, mtu=mtu)

    def add_vxlan(self, name: str, vni: int, local: str, port: int, mtu: int) -> None:
        self._links = None
        with _mapped(f"create vxlan {name}"):
            # learning off: forwarding comes from the FDB the frontend pushes, never from flooding;
            # proxy on: the device answers ARP from its permanent neighbours instead of sending it.
            self._ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local, vxlan_port=port,
                           vxlan_learning=0, vxlan_proxy=1, mtu=mtu)

    def add_veth(self, name: str, peer: str, peer_netns: str, mtu: int, peer_mac: str | None = None) -> None:
        self._links = None
        peer_spec: dict[str, object] = {"ifname": peer, "net_ns_fd": peer_netns, "mtu": mtu}
        if peer_mac is not None:
            peer_spec["address"] = peer_mac
        with _mapped(f"create veth {name}"):
            self._ipr.link("add", ifname=name, kind="veth", mtu=mtu, peer=peer_spec)

    def set_master(self, name: str, bridge: str | None) -> None:
        self._links = None
        index = self._index(name)
        with _mapped(f"plug {name} into {bridge}" if bridge else f"unplug {name}"):
            self._ipr.link("set", index=index, master=self._index(bridge) if bridge else 0)

    def set_up(self, name: str, mtu: int | None = None) -> None:
        self._links = None
        index = self._index(name)
        with _mapped(f"bring {name} up"):
            if mtu is None:
                self._ipr.link("set", index=index, state="up")
            else:
                self._ipr.link("set", index=index, state="up", mtu=mtu)

    def set_mac(self, name: str, mac: str) -> None:
        self._links = None
        index = self._index(name)
        with _mapped(f"set the MAC of {name}"):
            self._ipr.link("set", index=index, address=mac)

    def delete_link(self, name: str) -> None:
        self._links = None
        try:
            with _mapped(f"delete link {name}"):
                found = self._ipr.link_lookup(ifname=name)
                if found:
                    self._ipr.link("del", index=found[0])
        except LinkNotFound:
            pass  # gone between the look-up and the delete: a veth whose peer's namespace was just removed

    def take_link(self, name: str, source_netns: str) -> bool:
        """Move link ``name`` from ``source_netns`` (a name or a path such as /proc/1/ns/net) into
        this namespace; False if it is not there."""
        self._links = None
        with _mapped(f"move {name} from {source_netns}"):
            source = NetNS(source_netns)
            try:
                found = source.link_lookup(ifname=name)
                if not found:
                    return False
                target = namespace_path(self.netns) if self.netns else f"/proc/{os.getpid()}/ns/net"
                fd = os.open(target, os.O_RDONLY)
                try:
                    source.link("set", index=found[0], net_ns_fd=fd)
                finally:
                    os.close(fd)
                return True
            finally:
                source.close()

    # --- forwarding -------------------------------------------------------------------------

    def fdb(self, vxlan: str) -> set[tuple[str, str]]:
        """The remote entries of a VXLAN device: (MAC, VTEP)."""
        index = self._index(vxlan)
        with _mapped(f"list the FDB of {vxlan}"):
            return {(msg.get("NDA_LLADDR"), msg.get("NDA_DST")) for msg in self._ipr.fdb("dump", ifindex=index)
                    if msg.get("NDA_DST") and msg.get("NDA_LLADDR") != "00:00:00:00:00:00"}

    def fdb_add(self, vxlan: str, mac: str, vtep: str) -> None:
        index = self._index(vxlan)
        with _mapped(f"add {mac} to the FDB of {vxlan}"):
            # on the device: where to send the MAC's frames; on the bridge: that the MAC is behind
            # the VXLAN port, so that its frames are never flooded to local ports.
            self._ipr.fdb("replace", ifindex=index, lladdr=mac, dst=vtep, state=NUD_PERMANENT, flags=NTF_SELF)
            self._ipr.fdb("replace", ifindex=index, lladdr=mac, state=NUD_NOARP, flags=NTF_MASTER)

    def fdb_del(self, vxlan: str, mac: str, vtep: str) -> None:
        index = self._index(vxlan)
        with _mapped(f"remove {mac} from the FDB of {vxlan}"):
            with contextlib.suppress(NetlinkError):
                self._ipr.fdb("del", ifindex=index, lladdr=mac, dst=vtep, flags=NTF_SELF)
            with contextlib.suppress(NetlinkError):
                self._ipr.fdb("del", ifindex=index, lladdr=mac, flags=NTF_MASTER)

    def fdb_pin(self, port: str, mac: str) -> None:
        """Tell the bridge that ``mac`` is behind ``port`` (a local tap), so it is never flooded."""
        index = self._index(port)
        with _mapped(f"pin {mac} on {port}"):
            self._ipr.fdb("replace", ifindex=index, lladdr=mac, state=NUD_NOARP, flags=NTF_MASTER)

    def neighbours(self, name: str) -> set[tuple[str, str]]:
        """The permanent IPv4 neighbours on a device: (IP, MAC)."""
        index = self._index(name)
        with _mapped(f"list the neighbours on {name}"):
            return {(msg.get("NDA_DST"), msg.get("NDA_LLADDR"))
                    for msg in self._ipr.neigh("dump", ifindex=index, family=AF_INET)
                    if msg["state"] & NUD_PERMANENT and msg.get("NDA_LLADDR")}

    def neighbour_set(self, name: str, ip: str, mac: str) -> None:
        index = self._index(name)
        with _mapped(f"set neighbour {ip} on {name}"):
            self._ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state=NUD_PERMANENT)

    def neighbour_del(self, name: str, ip: str) -> None:
        index = self._index(name)
        with _mapped(f"remove neighbour {ip} from {name}"):
            with contextlib.suppress(NetlinkError):
                self._ipr.neigh("del", dst=ip, ifindex=index)

    # --- addresses and routes -------------------------------------------------------------

    def addresses(self, name: str) -> set[tuple[str, int]]:
        index = self._index(name)
        with _mapped(f"list the addresses of {name}"):
            return {(msg.get("IFA_ADDRESS"), msg["prefixlen"])
                    for msg in self._ipr.get_addr(index=index, family=AF_INET)}

    def address_add(self, name: str, ip: str, prefixlen: int) -> None:
        index = self._index(name)
        with _mapped(f"add {ip}/{prefixlen} to {name}"):
            self._ipr.addr("add", index=index, address=ip, prefixlen=prefixlen)

    def address_del(self, name: str, ip: str, prefixlen: int) -> None:
        index = self._index(name)
        with _mapped(f"remove {ip}/{prefixlen} from {name}"):
            self._ipr.addr("del", index=index, address=ip, prefixlen=prefixlen)

    def routes(self, table: int = 254) -> set[tuple[str, str | None, str | None]]:
        """The IPv4 routes of ``table`` that go through a gateway or out of a device: (destination, gateway, device)."""
        links = {msg["index"]: msg.get("IFLA_IFNAME") for msg in self._ipr.get_links()}
        with _mapped(f"list the routes of table {table}"):
            out = set()
            for msg in self._ipr.get_routes(family=AF_INET, table=table):
                if msg["type"] != 1:  # unicast only: not the kernel's local and broadcast routes
                    continue
                dst = msg.get("RTA_DST")
                out.add((f"{dst}/{msg['dst_len']}" if dst else "default", msg.get("RTA_GATEWAY"),
                         links.get(msg.get("RTA_OIF"))))
            return out

    def route_set(self, destination: str, gateway: str | None, device: str, table: int = 254) -> None:
        index = self._index(device)
        spec: dict[str, object] = {"dst": destination, "oif": index, "table": table}
        if gateway:
            spec["gateway"] = gateway
        else:
            spec["scope"] = RT_SCOPE_LINK  # on the link: what a gateway of another route is reached by
        with _mapped(f"route {destination} in table {table}"):
            self._ipr.route("replace", **spec)

    def route_del(self, destination: str, table: int = 254) -> None:
        with _mapped(f"remove route {destination} from table {table}"):
            with contextlib.suppress(NetlinkError):
                self._ipr.route("del", dst=destination, table=table)

    def rules(self) -> set[tuple[str, int]]:
        """The policy rules that send a source to a table: (source address, table)."""
        with _mapped("list the policy rules"):
            return {(msg.get("FRA_SRC"), msg.get("FRA_TABLE") or msg["table"])
                    for msg in self._ipr.get_rules(family=AF_INET) if msg.get("FRA_SRC")}

    def rule_add(self, source: str, table: int, priority: int) -> None:
        with _mapped(f"add a rule from {source}"):
            self._ipr.rule("add", src=source, src_len=32, table=table, priority=priority)

    def rule_del(self, source: str, table: int) -> None:
        with _mapped(f"remove the rule from {source}"):
            with contextlib.suppress(NetlinkError):
                self._ipr.rule("del", src=source, src_len=32, table=table)

    def sysctl(self, key: str, value: str) -> None:
        """Set a sysctl of this namespace (``key`` and ``value`` are the driver's constants)."""
        path = "/proc/sys/" + key.replace(".", "/")

        def write() -> None:
            with open(path, "w") as f:
                f.write(value)

        try:
            run_in(self.netns, write)
        except OSError as exc:
            raise NetworkError(f"sysctl {key} in {self.netns or 'this namespace'}: {exc.strerror}") from exc

    def announce(self, device: str, ip: str) -> None:
        """A gratuitous ARP for ``ip`` from ``device``: neighbours on its segment learn where the address now is."""
        mac = bytes.fromhex(self.links()[device].mac.replace(":", ""))
        address = socket.inet_aton(ip)
        # request and reply forms, as arping -U and -A send them: hosts honour one or the other
        frames = [b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
                  + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac + address + b"\x00" * 6 + address
                  for op in (1, 2)]

        def send() -> None:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
                sock.bind((device, ETH_P_ARP))
                for frame in frames:
                    sock.send(frame)

        try:
            run_in(self.netns, send)
        except OSError as exc:
            raise NetworkError(f"announce {ip} on {device}: {exc.strerror}") from exc
