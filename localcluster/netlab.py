"""Namespace hypervisors on one machine: the lab network of a local cloud and of the network tests.

A lab, under one random token, is:

- an underlay: a namespace ``<token>-ul`` holding the underlay bridge, on a /24 of
  198.18.0.0/15 (RFC 2544's benchmarking range) chosen at random among those this machine
  does not route, so that two labs never share one;
- hypervisors: namespaces ``<token>-hvN`` joined to that bridge by a veth (``ul0``, the
  /24's host N: its VTEP), each with an external bridge ``brex`` (203.0.113.1N/24, TEST-NET-3)
  and its default route via
- an "outside" namespace (203.0.113.1/24) on a second bridge of the underlay namespace.
  TEST-NET-3 exists only inside the lab's namespaces, so labs side by side do not clash;
- a management link (unless asked not to): a veth from this machine's own namespace into the
  underlay bridge, with the /24's host 254 on the machine's end.  The daemons that stay in
  the machine's namespace (a frontend, its API, agents) listen there, and the hypervisors
  reach them through it;
- instances the way a tap makes them: a namespace whose ``eth0`` (with the port's MAC) is the
  peer of the port's tap name, made in a hypervisor, or in this machine's namespace, where
  libvirtd makes taps (``tap_netns``) for the driver to take into its own.

Names are short (Linux links hold 15 characters) and start with the token.  ``close()`` kills
every process left in the lab's namespaces (dnsmasqs of the drivers included), then removes
the namespaces, and with them every link and address inside, and the links it made in the
machine's namespace.  Its token, its process and what it makes in the machine's namespace are
written before it is made, to ``<workdir>/netlab.json`` and to ``/run/cloudland-netlab/``:
the next lab to open removes what a lab killed with SIGKILL left, whether in the same
directory or not (its process is gone).  After ``close()`` the file keeps only the /24, which
the next lab in the directory reuses (a frontend's generated certificate names the management
address).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pyroute2 import IPRoute, NetNS, netns

from backend.ports import tap_name
from service.files import write_atomic

__all__ = ["EXTERNAL_BRIDGE", "Hypervisor", "Instance", "NetLab", "netns_argv", "purge", "run_in"]

log = structlog.get_logger("localcluster.netlab")

UNDERLAY_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
EXTERNAL_NET = "203.0.113"
EXTERNAL_BRIDGE = "brex"
#: the host number of the management address in the underlay's /24 (hypervisors count from 1)
MANAGEMENT_HOST = 254
STATE_FILE = "netlab.json"
#: every open lab's state, also here: a lab killed in a work directory nobody reuses (a test's
#: temporary one) is removed by the next lab on the machine once its process is gone
REGISTRY = Path("/run/cloudland-netlab")
NETNS_DIR = "/run/netns"

_TOKEN_BYTES = 3
_TOKEN = re.compile(f"nl[0-9a-f]{{{2 * _TOKEN_BYTES}}}")

#: what busybox udhcpc runs with a lease: apply it, then say what it got on stdout
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
busybox ip addr flush dev "$interface"
busybox ip addr add "$ip/$mask" dev "$interface"
[ -n "$mtu" ] && busybox ip link set dev "$interface" mtu "$mtu"
[ -n "$router" ] && busybox ip route replace default via "$router" dev "$interface"
echo "LEASE ip=$ip mask=$mask router=$router mtu=$mtu"
"""


@dataclass(frozen=True)
class Hypervisor:
    name: str
    #: its namespace, a name under /run/netns
    netns: str
    vtep: str
    #: its own address on the external network (what SNATed egress leaves with)
    external_address: str

    @property
    def netns_path(self) -> str:
        return f"{NETNS_DIR}/{self.netns}"

    @property
    def namespace_prefix(self) -> str:
        """For its network driver: unique per hypervisor, and inside the lab's, so teardown finds them."""
        return f"{self.netns}-"


@dataclass(frozen=True)
class Instance:
    netns: str
    mac: str
    tap: str


def netns_argv(namespace: str) -> list[str]:
    """The prefix of a command line that runs the rest in ``namespace`` (nsenter execs, so the pid stays)."""
    return ["nsenter", f"--net={NETNS_DIR}/{namespace}", "--"]


def run_in(namespace: str, *argv: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*netns_argv(namespace), *argv], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {namespace} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def machine_namespace() -> str:
    """This process's network namespace, where libvirtd (started from here) makes its taps, as a
    path the backends can open: this process outlives every backend it starts.  Not pid 1's:
    a container may not let even root open that."""
    return f"/proc/{os.getpid()}/ns/net"


class NetLab:
    def __init__(self, workdir: Path, management: bool = True) -> None:
        self.workdir = Path(workdir)
        self._state_path = self.workdir / STATE_FILE
        self._previous = _read_state(self._state_path)
        self.token = _new_token()
        self.namespace = f"{self.token}-ul"
        self.outside = f"{self.token}-out"
        self.subnet = _free_subnet(self._previous)
        #: where this machine's own daemons are reached from the hypervisors; None without the link
        self.management_address = str(self.subnet[MANAGEMENT_HOST]) if management else None
        #: its end in this machine's namespace
        self.management_link = f"{self.token}-mg" if management else None
        #: where instances' taps appear when made outside a hypervisor: give it to drivers as tap_netns
        self.tap_netns = machine_namespace()
        self.external_net = {"cidr": f"{EXTERNAL_NET}.0/24", "gateway": f"{EXTERNAL_NET}.1"}
        self.hypervisors: list[Hypervisor] = []
        self._instances = 0
        #: links made in this machine's namespace (deleting a namespace takes the rest)
        self._machine_links: list[str] = []
        self._script = self.workdir / "udhcpc.sh"
        self._opened = False

    @property
    def prefix(self) -> str:
        """What every namespace of this lab starts with."""
        return f"{self.token}-"

    def open(self) -> "NetLab":
        self.workdir.mkdir(parents=True, exist_ok=True)
        _remove(self._previous)
        _remove_orphans()
        self._opened = True
        self._save()
        try:
            self._make_namespace(self.namespace)
            with NetNS(self.namespace) as ul:
                for bridge in ("ulbr", "exbr"):
                    ul.link("add", ifname=bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
                    ul.link("set", index=ul.link_lookup(ifname=bridge)[0], state="up")
            self._make_namespace(self.outside)
            self._join(self.outside, "xo", "eth0", "exbr", f"{EXTERNAL_NET}.1")
            if self.management_link is not None:
                self._make_management_link(self.management_link)
            self._script.write_text(UDHCPC_SCRIPT)
            self._script.chmod(0o755)
        except BaseException:
            self.close()
            raise
        log.info("netlab_up", token=self.token, underlay=str(self.subnet), management=self.management_address)
        return self

    def __enter__(self) -> "NetLab":
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove everything of the lab (safe to call twice, and after a failed ``open``)."""
        if not self._opened:
            return
        _remove(self._state())
        (REGISTRY / f"{self.token}.json").unlink(missing_ok=True)
        self._machine_links.clear()
        self.hypervisors.clear()
        # The /24 stays on record, for the next lab here to reuse.
        _write_state(self._state_path, {"subnet": str(self.subnet)})
        self._opened = False
        log.info("netlab_removed", token=self.token)

    # --- making ----------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {"token": self.token, "subnet": str(self.subnet), "machine_links": self._machine_links,
                "owner": _process_identity(os.getpid())}

    def _save(self) -> None:
        _write_state(self._state_path, self._state())
        REGISTRY.mkdir(mode=0o700, exist_ok=True)
        _write_state(REGISTRY / f"{self.token}.json", self._state())

    def _note_machine_link(self, name: str) -> None:
        """Recorded before it is made: a lab killed right after making it still has it removed."""
        self._machine_links.append(name)
        self._save()

    def _make_namespace(self, name: str) -> None:
        netns.create(name)
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    def _join(self, namespace: str, port: str, device: str, bridge: str, address: str | None,
              prefixlen: int = 24) -> None:
        """A veth from ``bridge`` in the underlay namespace to ``device`` in ``namespace``."""
        with NetNS(self.namespace) as ul:
            ul.link("add", ifname=port, kind="veth", peer={"ifname": device, "net_ns_fd": namespace})
            ul.link("set", index=ul.link_lookup(ifname=port)[0], master=ul.link_lookup(ifname=bridge)[0], state="up")
        with NetNS(namespace) as ns:
            index = ns.link_lookup(ifname=device)[0]
            if address is not None:
                ns.addr("add", index=index, address=address, prefixlen=prefixlen)
            ns.link("set", index=index, state="up")

    def _make_management_link(self, name: str) -> None:
        self._note_machine_link(name)
        with IPRoute() as ipr:
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": "mg", "net_ns_fd": self.namespace})
            index = ipr.link_lookup(ifname=name)[0]
            ipr.addr("add", index=index, address=self.management_address, prefixlen=self.subnet.prefixlen)
            ipr.link("set", index=index, state="up")
        with NetNS(self.namespace) as ul:
            ul.link("set", index=ul.link_lookup(ifname="mg")[0], master=ul.link_lookup(ifname="ulbr")[0], state="up")

    def hypervisor(self) -> Hypervisor:
        index = len(self.hypervisors) + 1
        if index >= MANAGEMENT_HOST:
            raise ValueError(f"a lab holds at most {MANAGEMENT_HOST - 1} hypervisors")
        name = f"{self.token}-hv{index}"
        vtep = str(self.subnet[index])
        external = f"{EXTERNAL_NET}.{10 + index}"
        self._make_namespace(name)
        self._join(name, f"u{index}", "ul0", "ulbr", vtep, self.subnet.prefixlen)
        self._join(name, f"x{index}", "ex0", "exbr", None)
        with NetNS(name) as hv:
            hv.link("add", ifname=EXTERNAL_BRIDGE, kind="bridge", br_stp_state=0, br_forward_delay=0)
            brex = hv.link_lookup(ifname=EXTERNAL_BRIDGE)[0]
            hv.link("set", index=hv.link_lookup(ifname="ex0")[0], master=brex)
            hv.addr("add", index=brex, address=external, prefixlen=24)
            hv.link("set", index=brex, state="up")
            hv.route("add", dst="default", gateway=f"{EXTERNAL_NET}.1")
        hypervisor = Hypervisor(name, name, vtep, external)
        self.hypervisors.append(hypervisor)
        log.info("netlab_hypervisor_made", netns=name, vtep=vtep, external=external)
        return hypervisor

    def network_section(self, hypervisor: Hypervisor) -> dict[str, Any]:
        """The ``network:`` section of the backend of ``hypervisor``, run in its namespace."""
        return {"vtep": hypervisor.vtep, "namespace_prefix": hypervisor.namespace_prefix,
                "external_interface": EXTERNAL_BRIDGE, "tap_netns": self.tap_netns}

    def instance(self, hypervisor: Hypervisor | None, port_id: str, mac: str) -> Instance:
        """An instance of ``port_id``: its tap waits for the driver in ``hypervisor``, or, with
        None, in this machine's namespace, as libvirtd makes it (the driver's ``tap_netns``)."""
        self._instances += 1
        name = f"{self.token}-vm{self._instances}"
        self._make_namespace(name)
        tap = tap_name(port_id)
        if hypervisor is None:
            self._note_machine_link(tap)
        with NetNS(hypervisor.netns) if hypervisor is not None else IPRoute() as ns:
            ns.link("add", ifname=tap, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name, "address": mac})
            ns.link("set", index=ns.link_lookup(ifname=tap)[0], state="up")
        with NetNS(name) as vm:
            vm.link("set", index=vm.link_lookup(ifname="eth0")[0], state="up")
        return Instance(name, mac, tap)

    def dhcp(self, instance: Instance, timeout: float = 60.0) -> dict[str, str]:
        """Ask for a lease on the instance's eth0 as a guest would (busybox udhcpc); what it got.
        Patient (30 tries a second apart): a loaded machine may start a dnsmasq late."""
        proc = run_in(instance.netns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "30", "-T", "1",
                      "-O", "mtu", "-s", str(self._script), timeout=timeout, check=False)
        for line in proc.stdout.splitlines():
            if line.startswith("LEASE "):
                return dict(item.split("=", 1) for item in line.split()[1:])
        raise AssertionError(f"no lease in {instance.netns}: {proc.stdout}{proc.stderr}")


# --- state and teardown --------------------------------------------------------------------------

def purge(workdir: Path) -> bool:
    """Remove the lab recorded in ``workdir`` unless its process still runs; whether there was one."""
    state = _read_state(Path(workdir) / STATE_FILE)
    owner = state.get("owner")
    if not state.get("token") or (isinstance(owner, list) and owner and _process_identity(owner[0]) == owner):
        return False
    _remove(state)
    (REGISTRY / f"{state['token']}.json").unlink(missing_ok=True)
    return True


def _new_token() -> str:
    taken = netns.listnetns()
    while True:
        token = "nl" + secrets.token_hex(_TOKEN_BYTES)
        if not any(name.startswith(f"{token}-") for name in taken):
            return token


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("netlab_state_unreadable", path=str(path))
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(state).encode())


def _free_subnet(previous: dict[str, Any]) -> ipaddress.IPv4Network:
    """The previous lab's /24 if this machine routes nothing of it but that lab's leftovers, else a
    random /24 of the range that this machine routes nothing of."""
    leftovers = set(previous.get("machine_links", []))
    taken: list[ipaddress.IPv4Network] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.get_routes(family=socket.AF_INET):
            dst, length = route.get("RTA_DST"), route["dst_len"]
            if dst and length and names.get(route.get("RTA_OIF")) not in leftovers:
                taken.append(ipaddress.IPv4Network(f"{dst}/{length}", strict=False))
        for addr in ipr.get_addr(family=socket.AF_INET):
            if names.get(addr["index"]) not in leftovers:
                taken.append(ipaddress.IPv4Network(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False))
    candidates = list(UNDERLAY_RANGE.subnets(new_prefix=24))
    random.shuffle(candidates)
    if previous.get("subnet"):
        candidates.insert(0, ipaddress.IPv4Network(previous["subnet"]))
    for candidate in candidates:
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeError(f"every /24 of {UNDERLAY_RANGE} is routed on this machine: no room for a lab")


def _process_identity(pid: int) -> list[int] | None:
    """A pid with its start time: a pid reused by another process does not pass for the first.
    None for a process that is gone or a zombie (killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else [pid, int(fields[19])]
    except (OSError, ValueError, IndexError):
        return None


def _remove_orphans() -> None:
    """The labs on record whose process is gone (killed before they could clean up)."""
    for path in REGISTRY.glob("*.json") if REGISTRY.is_dir() else []:
        state = _read_state(path)
        owner = state.get("owner")
        if isinstance(owner, list) and owner and _process_identity(owner[0]) == owner:
            continue
        log.info("netlab_orphan_found", token=state.get("token"), owner=owner)
        _remove(state)
        path.unlink(missing_ok=True)


def _remove(state: dict[str, Any]) -> None:
    """Everything a lab recorded in ``state``: its namespaces (and what they hold), its processes,
    its links in this machine's namespace."""
    token = state.get("token")
    # Only a token as labs make them: a damaged file must not name anyone else's namespaces.
    if isinstance(token, str) and _TOKEN.fullmatch(token):
        ours = [n for n in netns.listnetns() if n.startswith(f"{token}-")]
        for name in ours:
            _kill_processes_in(name)
        # The underlay last: hypervisors' links into its bridges go with their own namespaces.
        for name in sorted(ours, key=lambda n: n == f"{token}-ul"):
            with contextlib.suppress(OSError):
                netns.remove(name)
        if ours:
            log.info("netlab_namespaces_removed", token=token, namespaces=len(ours))
    with IPRoute() as ipr:
        for name in state.get("machine_links", []):
            for index in ipr.link_lookup(ifname=name):
                # Only a veth of ours: a tap of the same name would be libvirt's, not the lab's.
                if _kind(ipr, index) == "veth":
                    with contextlib.suppress(OSError):
                        ipr.link("del", index=index)


def _kind(ipr: IPRoute, index: int) -> str | None:
    link = ipr.get_links(index)[0]
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


def _pids_in(inode: int) -> list[int]:
    pids = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            if pid != os.getpid() and os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                pids.append(pid)
    return pids


def _kill_processes_in(name: str, timeout: float = 5.0) -> None:
    """SIGKILL every process in namespace ``name`` and wait until they are gone: a namespace
    outlives its name while a process holds it, and so would its links and addresses."""
    try:
        inode = os.stat(f"{NETNS_DIR}/{name}").st_ino
    except OSError:
        return
    end = time.monotonic() + timeout
    while pids := _pids_in(inode):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > end:
            log.warning("netlab_processes_linger", netns=name, pids=pids)
            return
        time.sleep(0.05)
