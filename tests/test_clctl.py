"""clctl against a real local cluster (frontend, one agent, three backends as processes).

The cluster tests share one cluster per module; the rest need no frontend at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner, Result

from clctl.main import DEFAULT_CONTROL_SOCKET, cli, format_age, order_tree, resolve_control, table
from localcluster import LocalCluster

CLCTL = Path(sys.executable).parent / "clctl"
HOSTS = ["host000", "host001", "host002"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CLOUDLAND_CONTROL or personal clctl.yaml from the developer's shell leaks in."""
    monkeypatch.delenv("CLOUDLAND_CONTROL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("clctl"), agents=1, backends=3, tree={"heartbeat_interval": 0.5})
    try:
        c.start()
        yield c
    finally:
        c.stop()


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, prog_name="clctl")


def rows(output: str) -> list[list[str]]:
    """The table's data rows, split on whitespace (the header and summary lines dropped)."""
    lines = [line for line in output.splitlines() if line.strip()]
    return [line.split(None, 3) for line in lines[1:]]


# Against a live cluster ---------------------------------------------------------------------


@pytest.mark.slow
def test_tree_table(cluster: LocalCluster) -> None:
    result = invoke("--control", cluster.control_socket, "tree")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NODE", "ROLE", "PARENT", "CHILDREN", "HEARTBEAT", "STATE"]
    table_rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in table_rows] == ["root", "agent0", *HOSTS]  # depth first: hosts under agent0
    assert table_rows[0] == ["root", "root", "-", "1", "-", "up"]
    assert table_rows[1][1:4] == ["agent", "root", "3"]
    for r in table_rows[2:]:
        assert r[1:4] == ["backend", "agent0", "0"]
        assert r[4].endswith("s") and r[5] == "up"
    # indented by level
    assert lines[1].startswith("root ") and lines[2].startswith("  agent0") and lines[3].startswith("    host000")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["group", "command"])
def test_tree_json(cluster: LocalCluster, where: str) -> None:
    args = ["--json", "tree"] if where == "group" else ["tree", "--json"]
    result = invoke("--control", cluster.control_socket, *args)
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.stdout)
    assert len(nodes) == 5
    assert {n["node_id"]: n["parent"] for n in nodes} == {
        "root": None, "agent0": "root", "host000": "agent0", "host001": "agent0", "host002": "agent0"}
    assert [n["node_id"] for n in nodes] == ["root", "agent0", *HOSTS]
    assert {n["state"] for n in nodes} == {"up"}
    assert nodes[0]["heartbeat_age"] is None and all(n["heartbeat_age"] >= 0 for n in nodes[1:])


@pytest.mark.slow
def test_ping_all(cluster: LocalCluster) -> None:
    result = invoke("--control", cluster.control_socket, "ping")
    assert result.exit_code == 0, result.output
    body = rows(result.stdout)
    assert [r[:2] for r in body[:-1]] == [[h, "ok"] for h in HOSTS]
    assert all(float(r[2]) >= 0 for r in body[:-1])
    assert result.stdout.splitlines()[-1].startswith("3 ok, 0 failed; latency p50 ")


@pytest.mark.slow
def test_ping_unknown_host_fails(cluster: LocalCluster) -> None:
    result = invoke("--control", cluster.control_socket, "ping", "host000", "nosuchhost")
    assert result.exit_code == 1, result.output
    status = {r[0]: r[1] for r in rows(result.stdout)[:-1]}
    assert status == {"host000": "ok", "nosuchhost": "unreachable"}
    assert "1 ok, 1 failed" in result.stdout


@pytest.mark.slow
def test_ping_relay_is_reported_not_a_backend(cluster: LocalCluster) -> None:
    result = invoke("--control", cluster.control_socket, "--json", "ping", "agent0", "host001")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert {r["host"]: r["status"] for r in data["results"]} == {"host001": "ok", "agent0": "unreachable"}
    assert "not a backend" in next(r["message"] for r in data["results"] if r["host"] == "agent0")


@pytest.mark.slow
def test_ping_error_reply_exits_2(cluster: LocalCluster) -> None:
    result = invoke("--control", cluster.control_socket, "ping", "bad/name")
    assert result.exit_code == 2
    assert "bad/name" in result.stderr and "Traceback" not in result.output


@pytest.mark.slow
def test_ping_subprocess_json(cluster: LocalCluster) -> None:
    env = dict(os.environ, CLOUDLAND_CONTROL=cluster.control_socket)
    proc = subprocess.run([str(CLCTL), "--json", "ping"], env=env, capture_output=True, text=True, timeout=60,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(r["host"], r["status"]) for r in data["results"]] == [(h, "ok") for h in HOSTS]
    assert data["summary"]["ok"] == 3 and data["summary"]["failed"] == 0
    assert 0 <= data["summary"]["p50_ms"] <= data["summary"]["max_ms"]


@pytest.mark.slow
def test_control_from_config_file(cluster: LocalCluster, tmp_path: Path) -> None:
    config = tmp_path / "xdg" / "cloudland" / "clctl.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"control_socket: {cluster.control_socket}\n")
    result = invoke("ping", "host002")
    assert result.exit_code == 0, result.output
    assert rows(result.stdout)[0][:2] == ["host002", "ok"]


@pytest.mark.slow
def test_host_completion(cluster: LocalCluster) -> None:
    env = dict(os.environ, CLOUDLAND_CONTROL=cluster.control_socket, COMP_WORDS="clctl ping host00",
               COMP_CWORD="2", _CLCTL_COMPLETE="bash_complete")
    proc = subprocess.run([str(CLCTL)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"plain,{h}" for h in HOSTS]


@pytest.mark.slow
def test_frontend_not_answering(tmp_path: Path) -> None:
    stale = tmp_path / "frontend.sock"  # left behind by a frontend that was killed
    stale.touch()
    result = invoke("--control", str(stale), "tree", "--timeout", "0.1")
    assert result.exit_code == 2
    assert "did not answer" in result.stderr and result.stdout == ""


# No frontend needed -------------------------------------------------------------------------


def test_no_frontend_exits_2() -> None:
    result = invoke("--control", "/nonexistent", "tree")
    assert result.exit_code == 2
    assert "no frontend control socket at /nonexistent" in result.stderr
    assert result.stdout == ""


def test_no_frontend_subprocess_no_traceback() -> None:
    env = dict(os.environ, CLOUDLAND_CONTROL="/nonexistent")
    proc = subprocess.run([str(CLCTL), "ping"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "/nonexistent" in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""


def test_bad_timeout_is_a_usage_error() -> None:
    result = invoke("--control", "/nonexistent", "ping", "--timeout", "0")
    assert result.exit_code == 2 and "--timeout" in result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script(shell: str) -> None:
    result = invoke("completion", shell)
    assert result.exit_code == 0, result.output
    assert "complete" in result.stdout and "_CLCTL_COMPLETE" in result.stdout


def test_completion_rejects_unknown_shell() -> None:
    assert invoke("completion", "tcsh").exit_code == 2


def test_control_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_control(None) == DEFAULT_CONTROL_SOCKET  # no file
    config = tmp_path / "xdg" / "cloudland" / "clctl.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("control_socket: /from/config.sock\n")
    assert resolve_control(None) == "/from/config.sock"
    assert resolve_control("/explicit.sock") == "/explicit.sock"
    # the environment beats the file, --control beats the environment
    assert "/from/config.sock" in invoke("tree").stderr
    assert "/from/env.sock" in invoke("tree", env={"CLOUDLAND_CONTROL": "/from/env.sock"}).stderr
    assert "/from/flag.sock" in invoke("--control", "/from/flag.sock", "tree",
                                       env={"CLOUDLAND_CONTROL": "/from/env.sock"}).stderr
    # a relative XDG_CONFIG_HOME is ignored, as the spec says
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_control(None) == DEFAULT_CONTROL_SOCKET


def test_broken_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "xdg" / "cloudland" / "clctl.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("control_socket: [unclosed\n")
    result = invoke("tree")
    assert result.exit_code == 2 and "not valid YAML" in result.stderr and "Traceback" not in result.output


def test_order_tree_depth_first_with_detached_nodes() -> None:
    def node(node_id: str, role: str, parent: str | None, state: str = "up") -> dict[str, Any]:
        return {"node_id": node_id, "role": role, "parent": parent, "state": state}

    nodes = [node("root", "root", None), node("a0", "agent", "root"), node("a1", "agent", "root"),
             node("gone", "backend", None, "down"), node("h2", "backend", "a1"), node("h1", "backend", "a0"),
             node("h0", "backend", "a1")]
    assert [(d, n["node_id"]) for d, n in order_tree(nodes)] == [
        (0, "root"), (1, "a0"), (2, "h1"), (1, "a1"), (2, "h0"), (2, "h2"), (0, "gone")]


def test_format_age_and_table() -> None:
    assert [format_age(a) for a in (None, 0.04, 0.25, 59.94, 65, 7300)] == [
        "-", "0.0s", "0.2s", "59.9s", "1m05s", "2h01m"]
    assert table(["A", "NUM"], [["xx", "1"], ["y", "100"]], right=(1,)).splitlines() == [
        "A   NUM", "xx    1", "y   100"]
