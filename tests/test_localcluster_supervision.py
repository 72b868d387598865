"""``make run`` (``python -m localcluster``) restarts a killed daemon as systemd would on a real host,
and gives up, non-zero and saying why, on one that a restart cannot help.

Each test runs the command as an operator does, on loopback (no guests, no namespaces), and
finds the daemons among its children by the config file each runs.  A restarted daemon reads its
config file again, as a restarted unit does: the first test edits the backends' files to give them
the stand-in compute driver of ``tests/support/compute_ops.py`` (it logs every op it runs, so "once"
is checked on the hosts), the second to make a backend fail at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import psutil
import pytest
import yaml

from localcluster import free_port
from tests.support.cloudapi import clctl, ok
from tests.support.qcow2 import fake_qcow2
from tests.support.waiting import until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LAUNCH_SECONDS = 3.0
#: RestartSec=1 in etc/systemd, which make run follows
RESTART_DELAY_S = 1.0


@dataclass
class MakeRun:
    workdir: Path
    api_port: int
    out: Path
    proc: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def restarted(self, name: str, restart: int = 1) -> int | None:
        """The pid ``name`` was restarted as, once make run says so for the ``restart``-th time."""
        for line in self.output().splitlines():
            if line.startswith(f"{name} ") and line.endswith(f"(restart {restart})"):
                return int(line.split(" as pid ")[1].split()[0])
        return None

    def daemons(self) -> dict[str, int]:
        """Each running daemon's pid, by name (its config file's)."""
        pids = {}
        for child in psutil.Process(self.proc.pid).children():
            try:
                argv = child.cmdline() if child.status() != psutil.STATUS_ZOMBIE else []
            except psutil.Error:  # gone meanwhile
                continue
            if "--config" in argv:
                pids[Path(argv[argv.index("--config") + 1]).stem] = child.pid
        return pids

    def config(self, name: str, **settings: Any) -> None:
        """Change settings in daemon ``name``'s config file: what it runs with from its next start."""
        path = self.workdir / "etc" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **settings}, sort_keys=False))

    def api(self) -> httpx.Client:
        """A client of the API logged in as admin, trusting the cloud's certificate."""
        url = f"https://127.0.0.1:{self.api_port}"
        verify = ssl.create_default_context(cafile=str(self.workdir / "frontend" / "tls" / "api.crt"))
        password = (self.workdir / "frontend" / "admin-password").read_text().strip()
        token = ok(httpx.post(f"{url}/v1/tokens", json={"username": "admin", "password": password},
                              verify=verify), 201)["token"]
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30)


def _processes_of(workdir: Path) -> list[psutil.Process]:
    """make run and every daemon it started: each names the work directory on its command line (the
    daemons run in sessions of their own, and outlive a make run that was killed)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(str(workdir) in arg for arg in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


@pytest.fixture
def make_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., MakeRun]]:
    """Start ``python -m localcluster`` and wait for the cloud; every process of it is killed at the end."""
    monkeypatch.chdir(REPO)  # the paths make run prints are relative to where it runs
    runs: list[MakeRun] = []

    def start(agents: int, backends: int, **env: str) -> MakeRun:
        workdir, port, out = tmp_path / "run", free_port(), tmp_path / "make-run.out"
        argv = [sys.executable, "-m", "localcluster", "--agents", str(agents), "--backends", str(backends),
                "--no-compute", "--no-netns-hypervisors", "--workdir", str(workdir), "--api-port", str(port)]
        with out.open("wb") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **env})
        run = MakeRun(workdir, port, out, proc)
        runs.append(run)
        until(lambda: "Ctrl-C stops everything" in run.output() or proc.poll() is not None, 60, "the cloud")
        assert proc.poll() is None, run.output()
        return run

    yield start
    for run in runs:
        for proc in sorted(_processes_of(run.workdir), key=lambda p: p.pid != run.proc.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()  # make run first: it would restart the others
        run.proc.wait(10)
        psutil.wait_procs(_processes_of(run.workdir), timeout=10)


def _stopped_cleanly(run: MakeRun) -> None:
    """Ctrl-C, even while a daemon restarts, stops every process and exits 0."""
    _kill_and_see_restarted(run, ["agent0"], restart=2)
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(30) == 0, run.output()
    assert run.output().splitlines()[-1] == "stopped"
    assert _processes_of(run.workdir) == []


def _login(run: MakeRun, home: Path) -> bool:
    """Log clctl in as make run says to, its command line pasted as printed."""
    printed = shlex.split(next(line for line in run.output().splitlines() if "clctl login " in line))
    command, password = printed[1:printed.index("<")], Path(printed[-1])
    return clctl(home, *command, stdin=password.read_text()).returncode == 0


def _kill_and_see_restarted(run: MakeRun, names: list[str], restart: int) -> None:
    before = run.daemons()
    for name in names:
        os.kill(before[name], signal.SIGKILL)
    for name in names:
        pid = until(lambda: run.restarted(name, restart), 20, f"make run to restart {name}")
        assert f"{name} was killed by SIGKILL; restarted as pid {pid} (restart {restart})" in run.output()
        assert pid != before[name] and until(lambda: run.daemons().get(name) == pid, 10, f"{name} as pid {pid}")


def _task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    return dict(ok(api.get(f"/v1/tasks/{task_id}")))


def test_killed_daemons_are_restarted_and_the_cloud_heals(make_run: Callable[..., MakeRun], tmp_path: Path) -> None:
    ops_log = tmp_path / "ops.log"
    run = make_run(agents=1, backends=2, CLOUDLAND_TEST_COMPUTE_LOG=str(ops_log),
                   CLOUDLAND_TEST_CREATE_DELAY=str(LAUNCH_SECONDS))
    backends = ["host000", "host001"]
    for name in backends:
        run.config(name, ops_modules=["tests.support.compute_ops"])
    _kill_and_see_restarted(run, ["frontend", "agent0", *backends], restart=1)

    home = tmp_path / "home"
    home.mkdir()
    until(lambda: _login(run, home), 30, "the restarted frontend to log clctl in")

    def every_backend_answers() -> bool:
        ping = clctl(home, "ping", "--timeout", "2")
        return ping.returncode == 0 and all(name in ping.stdout for name in backends)

    until(every_backend_answers, 60, "every backend to answer a ping through the tree", every=1.0)

    # A frontend killed mid-task finishes the task once make run has restarted it.
    api = run.api()
    until(lambda: len([h for h in ok(api.get("/v1/hypervisors"))["items"] if h["status"] == "up" and h["facts"]])
          == 2, 30, "2 hypervisors with capacity")
    ok(api.post("/v1/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}), 201)
    image = ok(api.post("/v1/images", json={"name": "tiny", "format": "qcow2"}), 201)
    ok(api.put(f"/v1/images/{image['id']}/file", content=fake_qcow2()))
    accepted = ok(api.post("/v1/instances", json={"name": "vm", "flavor": "small", "image": "tiny"}), 202)
    task_id = accepted["task"]["id"]
    until(lambda: any(s["op"] == "instance.create" for s in _task(api, task_id)["steps"]), 30, "the launch to be sent")
    _kill_and_see_restarted(run, ["frontend"], restart=2)
    final = until(lambda: (lambda t: t if t["status"] in ("succeeded", "failed") else None)(_task(api, task_id)),
                  60, "the task to end")
    assert final["status"] == "succeeded", final["error"]
    creates = [op["id"] for op in map(json.loads, ops_log.read_text().splitlines()) if op["op"] == "instance.create"]
    assert creates == [accepted["resource"]["id"]], "the instance must be built exactly once"
    assert "task_command_resent" in (run.workdir / "logs" / "frontend.log").read_text()

    # A plain kill (SIGTERM) is a clean stop, which systemd does not undo either.
    os.kill(run.daemons()["host001"], signal.SIGTERM)
    until(lambda: "host001 exited with status 0: stopped on purpose, so left down" in run.output(), 30,
          "make run to see host001 stopped")
    time.sleep(2 * RESTART_DELAY_S)
    assert "host001" not in run.daemons()
    _stopped_cleanly(run)


CRASHING_DRIVER = "raise RuntimeError('this driver crashes at every start')\n"


@pytest.mark.parametrize("breakage, reason, logged", [
    ({"workers": 0}, "host000 exited with status 2: a bad config or a start-up error, which a restart cannot fix",
     "workers: must be between 1 and 1024 (got 0)"),
    # The kill is the first of the failures in a row: the backend had just started.
    ({"ops_modules": ["crashing_driver"]}, "host000 exited with status 1, failing 5 times in a row within 10 s",
     "RuntimeError: this driver crashes at every start"),
], ids=["bad-config", "crash-loop"])
def test_make_run_gives_up_on_a_daemon_a_restart_cannot_help(make_run: Callable[..., MakeRun], tmp_path: Path,
                                                            breakage: dict[str, Any], reason: str,
                                                            logged: str) -> None:
    drivers = tmp_path / "drivers"
    drivers.mkdir()
    (drivers / "crashing_driver.py").write_text(CRASHING_DRIVER)
    run = make_run(agents=1, backends=1, PYTHONPATH=str(drivers))
    run.config("host000", **breakage)
    os.kill(run.daemons()["host000"], signal.SIGKILL)
    assert run.proc.wait(60) == 1, run.output()
    said = run.output()
    assert f"stopped: {reason}" in said, said
    assert logged in said.partition("/logs/host000.log:\n")[2], said
    assert _processes_of(run.workdir) == []
