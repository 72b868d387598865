"""DHCP: one dnsmasq per subnet with DHCP on a host, inside the network's router namespace.

dnsmasq serves only the MAC -> IP pairs of the ports on this host (``--dhcp-range ...,static``
with a hosts file), so a guest can never take an address that is not its own, and two hosts of
a subnet never answer the same guest (each serves its own ports, and DHCP's broadcasts never
cross the overlay: the VXLAN devices have no flood entry).  Its options (MTU, router, DNS)
are in an options file: a change of ports or options rewrites the files and sends SIGHUP,
never a restart.  A change of what its command line holds (the namespace, the interface or the
subnet's range) restarts it.

Its files live in ``<state_dir>/<vni>/``: ``hosts``, ``opts``, ``leases``, ``dnsmasq.log``,
``argv.json`` (the command line it was started with) and ``pid``.  dnsmasq runs in a session
of its own, so a backend killed with -9 leaves it serving; the next backend adopts it by its
pid file (checking /proc that the pid is still that dnsmasq) instead of restarting it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from service.files import write_atomic

from .exceptions import DhcpError
from .netlink import namespace_path

__all__ = ["DhcpServer", "Dnsmasq"]

log = structlog.get_logger("backend.network")

LEASE_TIME = "24h"
#: how long a started dnsmasq has to show that it stays up (it checks its arguments first)
START_CHECK_S = 0.3


@dataclass(frozen=True, slots=True)
class DhcpServer:
    vni: int
    #: the router namespace it runs in, and its interface there (holding the gateway address)
    namespace: str
    interface: str
    network: str
    netmask: str
    mtu: int
    #: the gateway address, sent as the guests' default route; None: no route (no router)
    router: str | None
    dns_servers: tuple[str, ...]
    #: (MAC, IP) of the ports it serves
    hosts: tuple[tuple[str, str], ...]


class Dnsmasq:
    def __init__(self, state_dir: Path, binary: str = "dnsmasq") -> None:
        self.state_dir = state_dir
        self.binary = binary
        #: dnsmasq processes this backend started (to reap them); adopted ones are not here
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def servers(self) -> set[int]:
        """The VNIs that have a DHCP server's files here."""
        if not self.state_dir.is_dir():
            return set()
        return {int(p.name) for p in self.state_dir.iterdir() if p.name.isdigit()}

    def ensure(self, server: DhcpServer) -> None:
        """Make the server for ``server.vni`` serve exactly this; idempotent."""
        directory = self.state_dir / str(server.vni)
        directory.mkdir(parents=True, exist_ok=True)
        hosts = "".join(f"{mac},{ip}\n" for mac, ip in sorted(server.hosts))
        opts = self._options(server)
        changed = _write_if_changed(directory / "hosts", hosts) | _write_if_changed(directory / "opts", opts)
        argv = self._argv(server, directory)
        pid = self._pid(server.vni)
        if pid is not None and _read(directory / "argv.json") == json.dumps(argv):
            if changed:
                os.kill(pid, signal.SIGHUP)  # re-reads the hosts and options files
                log.info("dhcp_reloaded", vni=server.vni, ports=len(server.hosts))
            return
        if pid is not None:
            self._stop(server.vni, pid)
        self._start(server.vni, argv, directory)

    def remove(self, vni: int) -> None:
        pid = self._pid(vni)
        if pid is not None:
            self._stop(vni, pid)
        directory = self.state_dir / str(vni)
        if directory.is_dir():
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()
        log.info("dhcp_removed", vni=vni)

    def watch(self) -> list[int]:
        """Restart every server whose dnsmasq died; returns their VNIs."""
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]
        restarted = []
        for vni in sorted(self.servers()):
            directory = self.state_dir / str(vni)
            argv_text = _read(directory / "argv.json")
            if argv_text is None or self._pid(vni) is not None:
                continue
            log.warning("dhcp_died", vni=vni)
            self._start(vni, json.loads(argv_text), directory)
            restarted.append(vni)
        return restarted

    def close(self) -> None:
        """Forget the children without stopping them: DHCP outlives the backend's restarts."""
        self._children.clear()

    # --- processes --------------------------------------------------------------------------

    def _argv(self, server: DhcpServer, directory: Path) -> list[str]:
        return [
            "nsenter", f"--net={namespace_path(server.namespace)}", "--",
            # No pid file: the default one is shared by every dnsmasq of the machine (namespace
            # hypervisors run several), and the backend knows its children's pids itself.
            self.binary, "--keep-in-foreground", "--pid-file=", "--conf-file=/dev/null", "--port=0", "--no-resolv",
            "--no-hosts",
            "--bind-interfaces", f"--interface={server.interface}", "--except-interface=lo",
            f"--dhcp-range={server.network},static,{server.netmask},{LEASE_TIME}",
            f"--dhcp-hostsfile={directory / 'hosts'}", f"--dhcp-optsfile={directory / 'opts'}",
            f"--dhcp-leasefile={directory / 'leases'}", f"--log-facility={directory / 'dnsmasq.log'}",
            "--dhcp-authoritative", "--user=root", "--group=root",
        ]

    @staticmethod
    def _options(server: DhcpServer) -> str:
        # An option given with no value is not sent: without it dnsmasq would offer itself as
        # the router and the DNS server.
        lines = [f"option:mtu,{server.mtu}",
                 f"option:router,{server.router}" if server.router else "option:router",
                 "option:dns-server," + ",".join(server.dns_servers) if server.dns_servers else "option:dns-server"]
        return "\n".join(lines) + "\n"

    def _start(self, vni: int, argv: list[str], directory: Path) -> None:
        log_file = (directory / "dnsmasq.log").open("ab")
        try:
            # A session of its own: neither the backend's death nor a signal to its group stops DHCP.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                    start_new_session=True)
        except OSError as exc:
            raise DhcpError(f"start dnsmasq for VNI {vni}: {exc}") from exc
        finally:
            log_file.close()
        deadline = time.monotonic() + START_CHECK_S
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        if proc.poll() is not None:
            raise DhcpError(f"dnsmasq for VNI {vni} exited at once ({proc.returncode}): "
                            + _tail(directory / "dnsmasq.log"))
        self._children[proc.pid] = proc
        write_atomic(directory / "argv.json", json.dumps(argv).encode())
        write_atomic(directory / "pid", f"{proc.pid}\n".encode())
        log.info("dhcp_started", vni=vni, pid=proc.pid)

    def _stop(self, vni: int, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        proc = self._children.pop(pid, None)
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / str(vni) / "pid").unlink()

    def _pid(self, vni: int) -> int | None:
        """The pid of this VNI's dnsmasq if it runs (and is the one started for it)."""
        directory = self.state_dir / str(vni)
        text = _read(directory / "pid")
        if text is None or not text.strip().isdigit():
            return None
        pid = int(text)
        proc = self._children.get(pid)
        if proc is not None and proc.poll() is not None:
            del self._children[pid]
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        # nsenter execs dnsmasq in place: the pid is dnsmasq's, with its own hosts file.
        if f"--dhcp-hostsfile={directory / 'hosts'}".encode() not in cmdline or _zombie(pid):
            return None
        return pid


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write_if_changed(path: Path, text: str) -> bool:
    if _read(path) == text:
        return False
    write_atomic(path, text.encode())
    return True


def _tail(path: Path) -> str:
    text = _read(path) or ""
    return text[-500:].strip() or "(no output)"
