"""The lab of namespace hypervisors (``localcluster/netlab.py``): what it leaves behind, even killed.

A lab killed with SIGKILL cannot clean up: the next lab to open, in any work directory,
removes what it recorded (namespaces, the processes in them, links in this machine's
namespace).  The next lab in a directory takes its /24 again; two labs side by side never
share one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute, netns

from localcluster.netlab import NetLab, run_in

pytestmark = [pytest.mark.root]

#: a lab with a hypervisor running a process and an instance whose tap is in this machine's
#: namespace; it says what it made, then waits to be killed
KILLED_LAB = textwrap.dedent("""
    import json, subprocess, sys, time
    from localcluster.netlab import NetLab, netns_argv
    lab = NetLab(sys.argv[1]).open()
    hv = lab.hypervisor()
    instance = lab.instance(None, sys.argv[2], "52:54:00:00:00:01")
    sleeper = subprocess.Popen([*netns_argv(hv.netns), "sleep", "600"], start_new_session=True)
    made = {"prefix": lab.prefix, "links": [lab.management_link, instance.tap], "pid": sleeper.pid}
    print("MADE", json.dumps(made), flush=True)
    time.sleep(600)
""")


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")


def _links() -> set[str]:
    with IPRoute() as ipr:
        return {link.get("IFLA_IFNAME") for link in ipr.get_links()}


def _made(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """What the killed lab says it made (its log lines come first)."""
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            if line.startswith("MADE "):
                return dict(json.loads(line[5:]))
    raise AssertionError(f"the lab exited ({proc.wait()}) before making anything")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _ping(namespace: str, address: str) -> bool:
    return run_in(namespace, "ping", "-c", "3", "-i", "0.2", "-W", "1", address, check=False).returncode == 0


@pytest.mark.slow  # a second Python process
def test_the_next_lab_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", KILLED_LAB, str(tmp_path / "killed"), str(uuid.uuid4())], cwd=repo,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        try:
            made = _made(proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert set(made["links"]) <= _links()
        assert [n for n in netns.listnetns() if n.startswith(made["prefix"])]
        assert _alive(made["pid"])  # still running in its hypervisor's namespace
    finally:
        # Whatever failed above, this removes what the killed lab left.
        with NetLab(tmp_path / "next"):
            pass
    assert not [n for n in netns.listnetns() if n.startswith(made["prefix"])]
    assert not set(made["links"]) & _links()
    assert not _alive(made["pid"])


@pytest.mark.slow  # a second Python process
def test_purging_a_killed_clouds_directory_removes_its_lab(tmp_path: Path) -> None:
    """What ``make clean`` does after a ``make run`` killed with SIGKILL."""
    repo = Path(__file__).resolve().parent.parent
    workdir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_LAB, str(workdir / "netlab"), str(uuid.uuid4())],
                            cwd=repo, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        try:
            made = _made(proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert [n for n in netns.listnetns() if n.startswith(made["prefix"])]
        purged = subprocess.run([sys.executable, "-m", "localcluster.purge", str(workdir)], cwd=repo, text=True,
                                capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(repo)})
        assert purged.returncode == 0, purged.stderr
    finally:
        with NetLab(tmp_path / "next"):
            pass
    assert "removed the namespace hypervisors" in purged.stdout
    assert not [n for n in netns.listnetns() if n.startswith(made["prefix"])]
    assert not set(made["links"]) & _links()
    assert not _alive(made["pid"])


def test_the_next_lab_in_a_directory_takes_its_underlay_again(tmp_path: Path) -> None:
    with NetLab(tmp_path) as first:
        pass
    with NetLab(tmp_path) as second:
        assert second.subnet == first.subnet and second.token != first.token


def test_two_labs_side_by_side_have_their_own_underlay(tmp_path: Path) -> None:
    with NetLab(tmp_path / "a") as a, NetLab(tmp_path / "b") as b:
        assert not a.subnet.overlaps(b.subnet)
        hv_a, hv_b = a.hypervisor(), b.hypervisor()
        for lab, hv in ((a, hv_a), (b, hv_b)):
            assert _ping(hv.netns, str(lab.management_address))
        # Each lab's hypervisors reach only their own underlay.
        assert not _ping(hv_a.netns, hv_b.vtep)
    assert not [n for n in netns.listnetns() if n.startswith((a.prefix, b.prefix))]
    assert not {a.management_link, b.management_link} & _links()
