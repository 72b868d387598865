"""A whole cloudland control plane on this machine: one frontend, agents and backends as real processes.

``make run`` uses it to give an operator a cluster to try, and the process-level tests use it
to build trees they can kill parts of.  Every daemon runs from its own YAML file written
under the work directory, exactly as the units in etc/ run them on real hosts.

The API serves TLS with the certificate the frontend generates on its first start
(``ca_file``); the backends and every client here trust that one certificate.

With ``netlab=True`` each backend is a hypervisor of its own: it runs inside a network
namespace of a lab (``localcluster/netlab.py``) with the network driver's ``network:``
section (its VTEP, its external bridge, a namespace prefix of its own), and reaches the
frontend, its API and the agents, which stay in this machine's namespace, on the lab's
management address, where they listen instead of loopback.

With ``frontends`` above 1 the cloud has standby frontends (``docs/ha.md``) on a PostgreSQL
server it starts itself (``pgserver.py``) unless given a database.  They share what real
frontends share: the database, the tree's key pair, the API's certificate and the image
store; every agent and backend is given every frontend's tree endpoint.  The first frontend
is started alone, so it is the first leader and the one that creates the admin user.

The tree runs CURVE, as it does by default: before an agent or a backend first starts, an
enrolment token for it is issued through the API as an admin would, and written to the file
its ``enrolment_token_file`` names.  Nodes already enrolled (a restart, a second ``make run``)
start with the keys they have.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from frontend.control import request
from frontend.tlscert import generated_pair
from service.nodekeys import root_key_path

from .netlab import Hypervisor, NetLab, netns_argv
from .pgserver import PostgresServer

__all__ = ["LocalCluster", "free_port", "rack_of"]


def rack_of(backend: str) -> str:
    """The group a local backend declares: racks give multicast something to address."""
    return f"rack{sum(map(ord, backend)) % 3}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    def __init__(
        self,
        workdir: Path,
        agents: int = 2,
        backends: int = 6,
        tree: dict[str, Any] | None = None,
        ops_modules: list[str] | None = None,
        log_level: str = "info",
        python: str = sys.executable,
        api_port: int | None = None,
        env: dict[str, str] | None = None,
        backend_config: dict[str, Any] | None = None,
        netlab: bool = False,
        frontends: int = 1,
        database: str | None = None,
        api_config: dict[str, Any] | None = None,
        frontend_config: dict[str, Any] | None = None,
    ) -> None:
        if frontends < 1:
            raise ValueError("a cloud needs at least one frontend")
        self.workdir = Path(workdir).resolve()
        self.lab = NetLab(self.workdir / "netlab") if netlab else None
        #: where the frontend, its API and the agents listen: what the backends can reach
        self.host = self.lab.management_address if self.lab is not None else "127.0.0.1"
        self.agent_names = [f"agent{i}" for i in range(agents)]
        self.backend_names = [f"host{i:03d}" for i in range(backends)]
        self.tree = dict(tree or {})
        #: settings added to every frontend's ``api:`` section
        self.api_config = dict(api_config or {})
        #: top-level settings of every frontend's config, over the local cloud's own (a bench that
        #: asks 10,000 hosts for their inventory wants the product's reconcile interval, not 5 s)
        self.frontend_config = dict(frontend_config or {})
        self.ops_modules = list(ops_modules or [])
        self.log_level = log_level
        self.python = python
        #: "frontend", then "frontend2", "frontend3"... for standbys; the first leads first
        self.frontend_names = ["frontend", *(f"frontend{i}" for i in range(2, frontends + 1))]
        self.frontend_endpoints = {name: f"tcp://{self.host}:{free_port()}" for name in self.frontend_names}
        self.frontend_endpoint = self.frontend_endpoints["frontend"]
        self.control_sockets = {name: str(self.workdir / f"{name}.sock") for name in self.frontend_names}
        self.control_socket = self.control_sockets["frontend"]
        self.api_ports = {name: api_port if name == "frontend" and api_port else free_port()
                          for name in self.frontend_names}
        self.api_port = self.api_ports["frontend"]
        self.api_url = f"https://{self.host}:{self.api_port}"
        self.api_urls = {name: f"https://{self.host}:{port}" for name, port in self.api_ports.items()}
        #: None: SQLite in the first frontend's data_dir (one frontend), else a server of our own
        self.database = database
        self.pg: PostgresServer | None = None
        #: the first frontend's generated (self-signed) certificate: what clients of the API trust
        self.ca_file = str(generated_pair(self.workdir / "frontend").cert)
        self.env = dict(env or {})
        #: extra settings for every backend's config file (e.g. a compute section)
        self.backend_config = dict(backend_config or {})
        #: each backend's hypervisor, kept across its restarts
        self.hypervisors: dict[str, Hypervisor] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: each daemon's command line, for ``respawn``
        self._commands: dict[str, list[str]] = {}
        self._logs: dict[str, Any] = {}
        self._admin_token: str | None = None

    # Processes ----------------------------------------------------------------------------

    def _config(self, name: str, body: dict[str, Any]) -> Path:
        path = self.workdir / "etc" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path

    def _spawn(self, name: str, module: str, config: Path, prefix: Sequence[str] = ()) -> None:
        """``prefix``: what the daemon's command line runs under (entering a hypervisor's namespace)."""
        self._commands[name] = [*prefix, self.python, "-m", module, "--config", str(config)]
        self.respawn(name)

    def respawn(self, name: str) -> None:
        """Run daemon ``name`` again as it last ran, the way systemd restarts a unit: the same command
        line and config file (an enrolled node starts with the keys in its data_dir, a backend in its
        hypervisor's namespace), its output appended to the same log."""
        if name not in self._logs:
            (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
            self._logs[name] = open(self.workdir / "logs" / f"{name}.log", "ab")
        repo = Path(__file__).resolve().parent.parent
        env = dict(os.environ, **self.env,
                   PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.procs[name] = subprocess.Popen(
            self._commands[name], stdout=self._logs[name], stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=repo, start_new_session=True,
        )

    @property
    def standbys(self) -> bool:
        return len(self.frontend_names) > 1

    def _tree_frontends(self) -> str | list[str]:
        """What agents and backends are given as ``frontend:``."""
        return list(self.frontend_endpoints.values()) if self.standbys else self.frontend_endpoint

    def _database(self) -> dict[str, Any]:
        if self.database is None and self.standbys:
            # In the system's temp dir: the postgres user cannot reach a workdir under pytest's
            # mode-0700 temp dirs; the server dies with the cloud anyway.
            self.pg = PostgresServer()
            self.pg.start()
            self.database = self.pg.create_database("cloudland")
        return {"database": self.database} if self.database is not None else {}

    def start_frontend(self, name: str = "frontend", wait: bool = True) -> None:
        """Start frontend ``name``; with ``wait``, until it leads (its root's control socket) and serves."""
        first = self.workdir / "frontend"
        shared: dict[str, Any] = {}
        api: dict[str, Any] = {}
        if name != "frontend":
            # What real standbys share: the root's key pair, the certificate, the image store.
            shared = {"key_file": str(first / "tree" / "root.key")}
            pair = generated_pair(first)
            api = {"tls_cert": str(pair.cert), "tls_key": str(pair.key)}
            images = self.workdir / name / "images"
            images.parent.mkdir(parents=True, exist_ok=True)
            if not images.is_symlink():
                images.symlink_to(first / "images")
        config = self._config(name, {
            "node_id": "root" if name == "frontend" else name,
            "data_dir": str(self.workdir / name),
            **self._database(),
            "control_socket": self.control_sockets[name],
            "log_level": self.log_level,
            "reconcile_interval_s": 5.0,
            # The generated certificate names api.host: backends verify the API at that address.
            "api": {"host": self.host, "port": self.api_ports[name], **self.api_config, **api},
            "tree": {"listen": self.frontend_endpoints[name], **shared, **self.tree},
            **self.frontend_config,
        })
        if os.path.exists(self.control_sockets[name]):
            os.unlink(self.control_sockets[name])  # left by a frontend that was killed
        self._spawn(name, "frontend", config)
        if wait:
            self._wait(lambda: os.path.exists(self.control_sockets[name]), 30, f"{name}'s control socket")
            self._wait(lambda: self._api_answers(name), 30, f"{name}'s API")

    def _api_answers(self, name: str = "frontend") -> bool:
        try:
            with socket.create_connection((self.host, self.api_ports[name]), timeout=0.5):
                return True
        except OSError:
            return False

    def leader(self) -> str | None:
        """The frontend whose root answers on its control socket, if one does."""
        for name in self.frontend_names:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None or not os.path.exists(self.control_sockets[name]):
                continue
            try:
                if "error" not in request(self.control_sockets[name], {"op": "tree", "timeout": 1.0}, 5.0):
                    return name
            except OSError:
                continue
        return None

    def ssl_context(self) -> ssl.SSLContext:
        """For clients of the API (``httpx.Client(verify=...)``): trusts the frontend's certificate only."""
        return ssl.create_default_context(cafile=self.ca_file)

    def admin_password(self) -> str:
        """The password the frontend generated for ``admin`` on its first start."""
        return (self.workdir / "frontend" / "admin-password").read_text().strip()

    def enrolment_token(self, name: str, role: str = "backend") -> str:
        """A one-time token that enrols ``name``, issued through the API as ``clctl hypervisor enroll`` does."""
        with httpx.Client(base_url=self.api_url, verify=self.ssl_context(), timeout=30) as client:
            if self._admin_token is None:
                login = client.post("/v1/tokens", json={"username": "admin", "password": self.admin_password()})
                if login.status_code != 201:
                    raise RuntimeError(f"logging in as admin: {login.status_code} {login.text}")
                self._admin_token = str(login.json()["token"])
            issued = client.post("/v1/hypervisors/enrolments", json={"name": name, "role": role, "ttl_s": 600},
                                 headers={"Authorization": f"Bearer {self._admin_token}"})
            if issued.status_code != 201:
                raise RuntimeError(f"enrolling {role} {name}: {issued.status_code} {issued.text}")
            return str(issued.json()["token"])

    def _enrolment(self, name: str, role: str, data_dir: Path, enrol: bool, token: str | None) -> dict[str, Any]:
        """The node's ``enrolment_token_file`` setting: ``token``, else a new token unless it is enrolled
        already (or ``enrol`` is false)."""
        enrolled = root_key_path(data_dir / "tree.key").exists()
        if token is None and (not enrol or enrolled or not self.tree.get("curve", True)):
            return {}
        path = self.workdir / "tokens" / f"{name}.token"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = token if token is not None else self.enrolment_token(name, role)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text + "\n")
        return {"enrolment_token_file": str(path)}

    def start_agent(self, name: str, enrol: bool = True, token: str | None = None) -> None:
        """Start agent ``name``, first enrolling it (see ``_enrolment``) if it never was."""
        data_dir = self.workdir / "agents" / name
        config = self._config(name, {
            "node_id": name,
            "frontend": self._tree_frontends(),
            "data_dir": str(data_dir),
            **self._enrolment(name, "agent", data_dir, enrol, token),
            "log_level": self.log_level,
            "tree": {"listen": f"tcp://{self.host}:0", **self.tree},
        })
        self._spawn(name, "agent", config)

    def start_backend(self, name: str, enrol: bool = True, token: str | None = None) -> None:
        """Start backend ``name``, first enrolling it (see ``_enrolment``) if it never was; in a
        lab, inside its hypervisor's namespace (made at its first start, kept across restarts)."""
        compute = {"frontend_ca_file": self.ca_file, **self.backend_config.get("compute", {})}
        data_dir = self.workdir / "backends" / name
        network: dict[str, Any] = {}
        prefix: list[str] = []
        if self.lab is not None:
            if name not in self.hypervisors:
                self.hypervisors[name] = self.lab.hypervisor()
            hypervisor = self.hypervisors[name]
            network = {"network": {**self.lab.network_section(hypervisor), **self.backend_config.get("network", {})}}
            prefix = netns_argv(hypervisor.netns)
        config = self._config(name, {
            "node_id": name,
            "frontend": self._tree_frontends(),
            "data_dir": str(data_dir),
            **self._enrolment(name, "backend", data_dir, enrol, token),
            "groups": [rack_of(name)],
            "ops_modules": self.ops_modules,
            "journal_fsync": False,
            "workers": 4,
            "log_level": self.log_level,
            "tree": {k: v for k, v in self.tree.items() if k not in ("fanout",)},
            **self.backend_config,
            "compute": compute,
            **network,
        })
        self._spawn(name, "backend", config, prefix)

    def start(self, timeout: float = 60.0) -> "LocalCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.lab is not None:
            self.lab.open()
        self.start_frontend()
        for name in self.frontend_names[1:]:
            self.start_frontend(name, wait=False)
        for name in self.agent_names:
            self.start_agent(name)
        self.wait_attached(self.agent_names, timeout)
        for name in self.backend_names:
            self.start_backend(name)
        self.wait_attached(self.backend_names, timeout)
        return self

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL for any that linger); safe to call twice."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
                    proc.terminate()
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        if self.lab is not None:
            self.lab.close()
            self.hypervisors.clear()
        if self.pg is not None:
            self.pg.stop()
            self.pg = None

    def __enter__(self) -> "LocalCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ is not called when __enter__ fails
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Talking to the frontend --------------------------------------------------------------

    def control(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Ask the leading frontend's root (the first frontend's, unless there are standbys)."""
        socket_path = self.control_socket
        if self.standbys:
            leader = self.leader()
            if leader is None:
                raise RuntimeError("no frontend leads")
            socket_path = self.control_sockets[leader]
        reply = request(socket_path, message, timeout)
        if "error" in reply:
            raise RuntimeError(f"frontend: {reply['error']}")
        return reply

    def tree_status(self) -> list[dict[str, Any]]:
        return list(self.control({"op": "tree", "timeout": 2.0})["nodes"])

    def wait_attached(self, names: list[str], timeout: float = 60.0) -> None:
        wanted = set(names)

        def attached() -> bool:
            for name in names:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    last = (self.log_text(name).strip().splitlines() or ["(no log)"])[-1]
                    raise RuntimeError(f"{name} exited with status {proc.returncode}: {last}")
            up = {n["node_id"] for n in self.tree_status() if n["state"] == "up"}
            return wanted <= up

        self._wait(attached, timeout, f"{len(wanted)} nodes to attach")

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not check():
            dead = [n for n, p in self.procs.items() if p.poll() is not None and n in self.frontend_names
                    and not self.standbys]
            if dead or time.monotonic() > end:
                raise TimeoutError(f"gave up waiting for {what}; logs in {self.workdir / 'logs'}")
            time.sleep(0.1)

    def log_text(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""
