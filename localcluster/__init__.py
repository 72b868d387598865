"""A whole cloudland control plane on this machine: one frontend, agents and backends as real processes.

``make run`` uses it to give an operator a cluster to try, and the process-level tests use it
to build trees they can kill parts of.  Every daemon runs from its own YAML file written
under the work directory, exactly as the units in etc/ run them on real hosts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from frontend.control import request

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
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.agent_names = [f"agent{i}" for i in range(agents)]
        self.backend_names = [f"host{i:03d}" for i in range(backends)]
        self.tree = dict(tree or {})
        self.ops_modules = list(ops_modules or [])
        self.log_level = log_level
        self.python = python
        self.port = free_port()
        self.frontend_endpoint = f"tcp://127.0.0.1:{self.port}"
        self.control_socket = str(self.workdir / "frontend.sock")
        self.api_port = api_port or free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env = dict(env or {})
        #: extra settings for every backend's config file (e.g. a compute section)
        self.backend_config = dict(backend_config or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}

    # Processes ----------------------------------------------------------------------------

    def _config(self, name: str, body: dict[str, Any]) -> Path:
        path = self.workdir / "etc" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path

    def _spawn(self, name: str, module: str, config: Path) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "logs" / f"{name}.log", "ab")
        self._logs[name] = log
        repo = Path(__file__).resolve().parent.parent
        env = dict(os.environ, **self.env,
                   PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.procs[name] = subprocess.Popen(
            [self.python, "-m", module, "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=repo,
            start_new_session=True,
        )

    def start_frontend(self) -> None:
        config = self._config("frontend", {
            "node_id": "root",
            "data_dir": str(self.workdir / "frontend"),
            "control_socket": self.control_socket,
            "log_level": self.log_level,
            "reconcile_interval_s": 5.0,
            "api": {"host": "127.0.0.1", "port": self.api_port},
            "tree": {"listen": self.frontend_endpoint, **self.tree},
        })
        if os.path.exists(self.control_socket):
            os.unlink(self.control_socket)  # left by a frontend that was killed
        self._spawn("frontend", "frontend", config)
        self._wait(lambda: os.path.exists(self.control_socket), 30, "the frontend's control socket")
        self._wait(self._api_answers, 30, "the frontend's API")

    def _api_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.api_port), timeout=0.5):
                return True
        except OSError:
            return False

    def admin_password(self) -> str:
        """The password the frontend generated for ``admin`` on its first start."""
        return (self.workdir / "frontend" / "admin-password").read_text().strip()

    def start_agent(self, name: str) -> None:
        config = self._config(name, {
            "node_id": name,
            "frontend": self.frontend_endpoint,
            "log_level": self.log_level,
            "tree": {"listen": "tcp://127.0.0.1:0", **self.tree},
        })
        self._spawn(name, "agent", config)

    def start_backend(self, name: str) -> None:
        config = self._config(name, {
            "node_id": name,
            "frontend": self.frontend_endpoint,
            "data_dir": str(self.workdir / "backends" / name),
            "groups": [rack_of(name)],
            "ops_modules": self.ops_modules,
            "journal_fsync": False,
            "workers": 4,
            "log_level": self.log_level,
            "tree": {k: v for k, v in self.tree.items() if k not in ("fanout",)},
            **self.backend_config,
        })
        self._spawn(name, "backend", config)

    def start(self, timeout: float = 60.0) -> "LocalCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_frontend()
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

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Talking to the frontend --------------------------------------------------------------

    def control(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        reply = request(self.control_socket, message, timeout)
        if "error" in reply:
            raise RuntimeError(f"frontend: {reply['error']}")
        return reply

    def tree_status(self) -> list[dict[str, Any]]:
        return list(self.control({"op": "tree", "timeout": 2.0})["nodes"])

    def wait_attached(self, names: list[str], timeout: float = 60.0) -> None:
        wanted = set(names)

        def attached() -> bool:
            up = {n["node_id"] for n in self.tree_status() if n["state"] == "up"}
            return wanted <= up

        self._wait(attached, timeout, f"{len(wanted)} nodes to attach")

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not check():
            dead = [n for n, p in self.procs.items() if p.poll() is not None and n == "frontend"]
            if dead or time.monotonic() > end:
                raise TimeoutError(f"gave up waiting for {what}; logs in {self.workdir / 'logs'}")
            time.sleep(0.1)

    def log_text(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""
