"""The run's child processes: started cheaply, accounted for, and always stopped.

Children come from a multiprocessing fork server that has imported sci, zmq and the backend
ops once: a fork of it costs milliseconds where ``python -m agent`` costs a quarter second of
imports.  The server is a fresh process, so no zmq context or bound logger leaks into the
children (forking the bench process itself would copy the root's live context and thread).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing import forkserver
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

__all__ = ["Fleet", "MemorySampler", "burn", "cpu_seconds", "peak_rss_mb", "prepare_child", "run_pids"]

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["bench.simhosts", "bench.flat"])

_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def prepare_child() -> None:
    """First thing in every child: die with the fork server, leave Ctrl-C to the bench, allow many fds."""
    # The fork server exits once no process holds the write end of its "alive" pipe.  Children
    # inherit a copy they never use; closing it lets the server go (and, through the death
    # signal, us with it) when the bench process ends, even by SIGKILL.
    server: Any = forkserver._forkserver  # private: the stdlib offers no way to drop this fd
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # Ctrl-C reaches the whole process group; the bench stops its children in order itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_fd_limit()


def burn() -> None:
    """Spin on one core until killed: background load that competes with the tree for CPU."""
    prepare_child()
    while True:
        pass


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Fleet:
    """Named child processes of one run."""

    def __init__(self) -> None:
        self.procs: dict[str, BaseProcess] = {}
        self._killed: set[str] = set()

    def spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        proc = _CTX.Process(target=target, args=args, name=name, daemon=True)
        proc.start()
        self.procs[name] = proc

    def pid(self, name: str) -> int:
        pid = self.procs[name].pid
        assert pid is not None
        return pid

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to say goodbye, as in a crash."""
        self._killed.add(name)
        self.procs[name].kill()

    def signal(self, name: str, sig: signal.Signals) -> None:
        """SIGSTOP, SIGCONT and the like: a process paused is not a process gone."""
        os.kill(self.pid(name), sig)

    def crashed(self) -> list[str]:
        """Processes that ended without being told to."""
        return [n for n, p in self.procs.items() if p.exitcode is not None and n not in self._killed]

    def check(self) -> None:
        """Raise if a process crashed: waiting for it would only run into a timeout."""
        crashed = self.crashed()
        if crashed:
            raise RuntimeError(f"processes ended early: {', '.join(crashed[:5])} (see stderr and their logs)")

    def stop(self, names: Iterable[str] | None = None, grace: float = 10.0) -> list[str]:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; return the names that needed the kill."""
        names = list(self.procs if names is None else names)
        self._killed.update(names)
        procs = [self.procs[n] for n in names]
        for proc in procs:
            if proc.exitcode is None and proc.pid is not None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process would keep SIGTERM pending
                proc.terminate()
        end = time.monotonic() + grace
        killed = []
        for proc in procs:
            proc.join(max(0.0, end - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
                proc.join(5)
                killed.append(proc.name)
        return killed


def run_pids() -> list[int]:
    """This process and every descendant: the fork server and all it forked."""
    me = psutil.Process()
    return [me.pid] + [p.pid for p in me.children(recursive=True)]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after it are plain.
    return data[data.rindex(b")") + 2:].decode().split()


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """user + system CPU seconds of each process (all its threads), from /proc/<pid>/stat."""
    out = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has held."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class MemorySampler:
    """Samples the machine's used memory (total - available) to find the run's peak over its baseline."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.baseline = self._used()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)

    @staticmethod
    def _used() -> int:
        vm = psutil.virtual_memory()
        return int(vm.total - vm.available)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._used())

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20
