"""service.config: every mistake in a daemon's YAML is reported naming the file, the field and
the reason, and a daemon given such a file exits at once with status 2 and one line on stderr."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from backend.ops.system import info
from sci import TreeSettings
from service import config as config_module
from service.config import (AgentConfig, BackendConfig, CapacitySection, ConfigError, FrontendConfig, LeadershipSection,
                            load)
from tests.support.daemons import run_daemon

KINDS = [FrontendConfig, AgentConfig, BackendConfig]
KIND_IDS = ["frontend", "agent", "backend"]


def _write(tmp_path: Path, text: str | bytes, name: str = "daemon.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(kind: type[Any], path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(kind, path)
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    assert message.startswith(f"{path}: "), f"does not name the file first: {message!r}"
    return message


# The cases of the brief, for every daemon ------------------------------------------------

COMMON_CASES = [
    # (id, file text, what the message must say after "<file>: ")
    ("unknown-top-level-key", "colour: blue\n", "colour: unknown setting (known: "),
    ("unknown-tree-key", "tree:\n  fanuot: 8\n", "tree.fanuot: unknown setting"),
    ("tree-not-a-mapping", "tree: [1, 2]\n", "tree: must be a mapping"),
    ("tunable-out-of-range", "tree:\n  heartbeat_misses: 1\n",
     "tree.heartbeat_misses: must be between 2 and 100 (got 1)"),
    ("tunable-wrong-type", "tree:\n  heartbeat_interval: fast\n",
     "tree.heartbeat_interval: must be a number (got 'fast')"),
    ("tunable-bool", "tree:\n  read_batch: true\n", "tree.read_batch: must be a number (got True)"),
    ("tunables-inconsistent", "tree:\n  heartbeat_interval: 0.1\n  heartbeat_misses: 2\n",
     "tree.disconnect_grace: must be below the dead-after time"),
    ("bad-node-id", 'node_id: "bad id!"\n', "node_id: node id 'bad id!' must be 1-64 characters"),
    ("node-id-too-long", f"node_id: {'h' * 65}\n", "node_id: node id"),
    ("node-id-wrong-type", "node_id: 42\n", "node_id: must be a string (got 42)"),
    ("bad-log-level", "log_level: verbose\n", "log_level: must be debug, info, warning or error (got 'verbose')"),
    ("log-level-wrong-type", "log_level: [info]\n", "log_level: must be a string"),
    ("not-a-mapping", "- node_id: a\n- node_id: b\n", "must be a mapping of settings"),
    ("scalar-file", "just some words\n", "must be a mapping of settings"),
    ("invalid-yaml", "node_id: a\ntree: {listen: tcp://x:1\n", "not valid YAML: "),
    ("not-utf8", b"node_id: h\xf6st\n", "not UTF-8 text"),
]


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("text,expected", [c[1:] for c in COMMON_CASES], ids=[c[0] for c in COMMON_CASES])
def test_error_names_file_field_and_reason(tmp_path: Path, kind: type[Any], text: str | bytes, expected: str) -> None:
    message = _error(kind, _write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'daemon.yaml'}: {expected}"), message


LISTEN_CASES = [
    ("bad-tree-listen", "tree:\n  listen: 0.0.0.0:7700\n", "tree.listen: must be an endpoint like tcp://"),
    ("tree-listen-not-a-string", "tree:\n  listen: 7700\n", "tree.listen: must be an endpoint"),
    ("bad-tree-advertise", "tree:\n  advertise: controller\n", "tree.advertise: must be an endpoint"),
]


@pytest.mark.parametrize("kind", [FrontendConfig, AgentConfig], ids=["frontend", "agent"])
@pytest.mark.parametrize("text,expected", [c[1:] for c in LISTEN_CASES], ids=[c[0] for c in LISTEN_CASES])
def test_listen_errors_name_file_field_and_reason(tmp_path: Path, kind: type[Any], text: str, expected: str) -> None:
    message = _error(kind, _write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'daemon.yaml'}: {expected}"), message


@pytest.mark.parametrize("key", ["listen", "advertise"])
def test_backend_refuses_an_endpoint_of_its_own(tmp_path: Path, key: str) -> None:
    message = _error(BackendConfig, _write(tmp_path, f"tree:\n  {key}: tcp://0.0.0.0:7710\n"))
    assert f"tree.{key}: a backend is a leaf and listens nowhere" in message


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_missing_file(tmp_path: Path, kind: type[Any]) -> None:
    path = tmp_path / "nowhere.yaml"
    assert _error(kind, path) == f"{path}: cannot read: No such file or directory"


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_directory_instead_of_file(tmp_path: Path, kind: type[Any]) -> None:
    assert _error(kind, tmp_path) == f"{tmp_path}: cannot read: Is a directory"


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    message = _error(BackendConfig, _write(tmp_path, "node_id: a\nworkers: [1, 2\n"))
    assert "line 3" in message, message


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    # `workers` is a backend setting: an agent must say so rather than ignore it.
    message = _error(AgentConfig, _write(tmp_path, "workers: 4\n"))
    assert message.endswith("workers: unknown setting (known: data_dir, enrolment_token_file, frontend, log_level, "
                            "node_id, tree)"), message


# Settings only some daemons have -----------------------------------------------------------

BACKEND_CASES = [
    ("workers-wrong-type", 'workers: "many"\n', "workers: must be an integer (got 'many')"),
    ("workers-bool", "workers: true\n", "workers: must be an integer (got True)"),
    ("workers-zero", "workers: 0\n", "workers: must be between 1 and 1024 (got 0)"),
    ("workers-too-many", "workers: 5000\n", "workers: must be between 1 and 1024 (got 5000)"),
    ("capacity-negative", "capacity:\n  memory_mb: -1\n", "capacity.memory_mb: must be 0 (all the machine has) or more (got -1)"),
    ("capacity-unknown", "capacity:\n  cpus: 2\n", "capacity.cpus: unknown setting (known: disk_gb, memory_mb, vcpus)"),
    ("journal-fsync-wrong-type", "journal_fsync: yes please\n",
     "journal_fsync: must be true or false (got 'yes please')"),
    ("groups-not-a-list", "groups: rack1\n", "groups: must be a list of strings"),
    ("groups-not-strings", "groups: [rack1, 2]\n", "groups: must be a list of strings"),
    ("ops-modules-not-a-list", "ops_modules: backend.ops.system\n", "ops_modules: must be a list of strings"),
    ("data-dir-wrong-type", "data_dir: 17\n", "data_dir: must be a string (got 17)"),
    ("frontend-wrong-type", "frontend: 7700\n", "frontend: must be an endpoint or a list of endpoints (got 7700)"),
    ("frontend-empty-list", "frontend: []\n", "frontend: must be an endpoint or a list of endpoints (got [])"),
    ("frontend-twice", "frontend: [tcp://a:7700, tcp://a:7700]\n", "frontend: lists an endpoint twice"),
    ("cache-age-negative", "compute:\n  image_cache_max_age_days: -1\n",
     "compute.image_cache_max_age_days: must be between 0 (no age limit) and 36500 (got -1)"),
    ("cache-age-wrong-type", "compute:\n  image_cache_max_age_days: a week\n",
     "compute.image_cache_max_age_days: must be a number (got 'a week')"),
    ("cache-size-negative", "compute:\n  image_cache_max_gb: -0.5\n",
     "compute.image_cache_max_gb: must be between 0 (no limit) and 1000000 (got -0.5)"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in BACKEND_CASES], ids=[c[0] for c in BACKEND_CASES])
def test_backend_setting_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    assert _error(BackendConfig, path) == f"{path}: {expected}"


@pytest.mark.parametrize("kind", [AgentConfig, BackendConfig], ids=["agent", "backend"])
def test_frontend_must_be_an_endpoint(tmp_path: Path, kind: type[Any]) -> None:
    path = _write(tmp_path, "frontend: controller.example:7700\n")
    assert _error(kind, path) == (f"{path}: frontend: must be an endpoint like tcp://controller:7700 "
                                  "(got 'controller.example:7700')")


def test_control_socket_wrong_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "control_socket: 1\n")
    assert _error(FrontendConfig, path) == f"{path}: control_socket: must be a string (got 1)"


RETENTION_CASES = [
    ("audit-negative", "audit_retention_days: -1\n",
     "audit_retention_days: must be between 0 (keep forever) and 36500 (got -1)"),
    ("audit-too-long", "audit_retention_days: 40000\n",
     "audit_retention_days: must be between 0 (keep forever) and 36500 (got 40000)"),
    ("event-negative", "event_retention_days: -1\n",
     "event_retention_days: must be between 0 (keep forever) and 36500 (got -1)"),
    ("event-too-long", "event_retention_days: 40000\n",
     "event_retention_days: must be between 0 (keep forever) and 36500 (got 40000)"),
    ("event-fraction", "event_retention_days: 1.5\n", "event_retention_days: must be an integer (got 1.5)"),
    ("audit-bool", "audit_retention_days: false\n", "audit_retention_days: must be an integer (got False)"),
]


def test_retention_bounds_and_forever_load(tmp_path: Path) -> None:
    defaults = load(FrontendConfig, None)
    assert (defaults.audit_retention_days, defaults.event_retention_days) == (365, 90)
    config = load(FrontendConfig, _write(tmp_path, "audit_retention_days: 0\nevent_retention_days: 36500\n"))
    assert (config.audit_retention_days, config.event_retention_days) == (0, 36500)
    assert load(FrontendConfig, _write(tmp_path, "event_retention_days: 1\n")).event_retention_days == 1


# The tree's CURVE identity ------------------------------------------------------------------

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"

IDENTITY_CASES = [
    ("curve-not-a-bool", AgentConfig, "tree:\n  curve: maybe\n", "tree.curve: must be true or false (got 'maybe')"),
    ("key-file-not-a-string", BackendConfig, "tree:\n  key_file: 7\n", "tree.key_file: must be a string (got 7)"),
    ("root-key-short", BackendConfig, "tree:\n  root_key: abc\n",
     "tree.root_key: must be the frontend's public key, 40 characters of Z85 (got 'abc')"),
    ("root-key-not-z85", AgentConfig, f"tree:\n  root_key: '{'~' * 40}'\n",
     f"tree.root_key: must be the frontend's public key, 40 characters of Z85 (got '{'~' * 40}')"),
    ("root-key-on-the-root", FrontendConfig, f"tree:\n  root_key: '{KEY}'\n",
     "tree.root_key: the frontend is the root, its key pair is tree.key_file; remove it"),
    ("token-file-not-a-string", AgentConfig, "enrolment_token_file: [a]\n",
     "enrolment_token_file: must be a string (got ['a'])"),
]


@pytest.mark.parametrize("kind,text,expected", [c[1:] for c in IDENTITY_CASES], ids=[c[0] for c in IDENTITY_CASES])
def test_tree_identity_errors(tmp_path: Path, kind: type[Any], text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    assert _error(kind, path) == f"{path}: {expected}"


def test_key_files_default_under_each_data_dir(tmp_path: Path) -> None:
    assert load(FrontendConfig, _write(tmp_path, "data_dir: /srv/fe\n")).key_path == Path("/srv/fe/tree/root.key")
    assert load(AgentConfig, _write(tmp_path, "data_dir: /srv/ag\n")).key_path == Path("/srv/ag/tree.key")
    backend = load(BackendConfig, _write(tmp_path, f"tree:\n  key_file: /k/b.key\n  root_key: '{KEY}'\n"))
    assert backend.key_path == Path("/k/b.key") and backend.tree.root_key == KEY and backend.tree.curve


# Tunables: whole numbers and finite values ---------------------------------------------------

TUNABLE_CASES = [
    ("int-tunable-fraction", "tree:\n  fanout: 2.5\n", "tree.fanout: must be a whole number (got 2.5)"),
    ("int-tunable-infinite", "tree:\n  fanout: .inf\n", "tree.fanout: must be a whole number (got inf)"),
    ("float-tunable-infinite", "tree:\n  reattach_grace: .inf\n",
     "tree.reattach_grace: must be a finite number (got inf)"),
    ("float-tunable-nan", "tree:\n  hop_margin: .nan\n", "tree.hop_margin: must be a finite number (got nan)"),
    ("float-tunable-huge", "tree:\n  heartbeat_interval: 1" + "0" * 400 + "\n",
     "tree.heartbeat_interval: must be a finite number (too large)"),
    ("fanout-below-2", "tree:\n  fanout: 1\n", "tree.fanout: must be at least 2 (got 1)"),
    ("frame-too-small", "tree:\n  max_frame_bytes: 100\n",
     "tree.max_frame_bytes: must be between 4 KiB and 1 GiB (got 100)"),
    ("negative-grace", "tree:\n  reattach_grace: -1\n", "tree.reattach_grace: must not be negative (got -1.0)"),
]


LEADERSHIP_CASES = [
    ("renew-too-fast", "leadership:\n  renew_s: 0.01\n", "leadership.renew_s: must be between 0.05 and 60 (got 0.01)"),
    ("no-margin", "leadership:\n  margin_s: 0\n", "leadership.margin_s: must be between 0.1 and 60 (got 0)"),
    ("lease-not-a-number", "leadership:\n  lease_s: soon\n", "leadership.lease_s: must be a number (got 'soon')"),
    ("one-renewal-only", "leadership:\n  lease_s: 2\n  renew_s: 0.4\n",
     "leadership.lease_s: must leave at least two renewals (2 x renew_s = 0.8) before the leader gives up at "
     "lease_s - margin_s (got 2 - 2.5)"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in TUNABLE_CASES + RETENTION_CASES + LEADERSHIP_CASES],
                         ids=[c[0] for c in TUNABLE_CASES + RETENTION_CASES + LEADERSHIP_CASES])
def test_frontend_setting_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    assert _error(FrontendConfig, path) == f"{path}: {expected}"


def test_a_shorter_lease_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, "leadership:\n  lease_s: 2.5\n  renew_s: 0.25\n  margin_s: 1\n")
    assert load(FrontendConfig, path).leadership == LeadershipSection(2.5, 0.25, 1.0)


def test_tunables_are_converted_to_their_types(tmp_path: Path) -> None:
    path = _write(tmp_path, "tree:\n  fanout: 8.0\n  heartbeat_interval: 2\n  read_batch: 64\n")
    settings = load(AgentConfig, path).tree.settings
    assert settings == TreeSettings(fanout=8, heartbeat_interval=2.0, read_batch=64)
    assert type(settings.fanout) is int and type(settings.heartbeat_interval) is float


# What loads --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_empty_file_means_every_default(tmp_path: Path, kind: type[Any]) -> None:
    assert load(kind, _write(tmp_path, "# nothing set\n")) == load(kind, None)


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module.socket, "gethostname", lambda: "hv7.example.com")
    assert load(FrontendConfig, None).node_id == "root"
    assert load(FrontendConfig, None).tree.listen == "tcp://0.0.0.0:7700"
    assert load(AgentConfig, None).node_id == "hv7"
    assert load(AgentConfig, None).tree.listen == "tcp://0.0.0.0:7710"
    assert load(BackendConfig, None).node_id == "hv7"
    assert load(BackendConfig, None).workers == 16


def test_tree_section_keeps_the_daemons_default_listen(tmp_path: Path) -> None:
    path = _write(tmp_path, "tree:\n  fanout: 8\n")
    assert load(AgentConfig, path).tree.listen == "tcp://0.0.0.0:7710"
    assert load(FrontendConfig, path).tree.listen == "tcp://0.0.0.0:7700"


def test_unusable_hostname_is_reported_against_node_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config_module.socket, "gethostname", lambda: "bad_host!")
    path = _write(tmp_path, "node_id: null\n")
    assert _error(BackendConfig, path).startswith(f"{path}: node_id: node id 'bad_host!' must be")


def test_a_full_backend_config(tmp_path: Path) -> None:
    path = _write(tmp_path, """
node_id: hv0001
frontend: tcp://10.0.0.1:7700
data_dir: /srv/cloudland
groups: [rack1, gpu]
ops_modules: [backend.ops.system]
workers: 4
journal_fsync: false
log_level: debug
tree:
  heartbeat_interval: 0.5
  heartbeat_misses: 4
""")
    config = load(BackendConfig, path)
    assert config == BackendConfig(
        node_id="hv0001", frontend=("tcp://10.0.0.1:7700",), data_dir="/srv/cloudland", groups=("rack1", "gpu"),
        ops_modules=("backend.ops.system",), workers=4, journal_fsync=False, log_level="debug",
        tree=config.tree,
    )
    assert config.tree.settings == TreeSettings(heartbeat_interval=0.5, heartbeat_misses=4)


# The daemons: a bad config exits at once with status 2 and one line on stderr ---------------

DAEMON_CASES = [
    # (module, bad file text, what the line must say after "cloudland-<module>: <file>: ")
    ("backend", 'workers: "many"\n', "workers: must be an integer"),
    ("agent", "tree:\n  listen: 0.0.0.0:7710\n", "tree.listen: must be an endpoint"),
    ("frontend", "tree:\n  heartbeat_misses: 1\n", "tree.heartbeat_misses: must be between 2 and 100"),
]


@pytest.mark.parametrize("module,text,expected", DAEMON_CASES, ids=[c[0] for c in DAEMON_CASES])
def test_daemon_exits_2_on_a_bad_config(tmp_path: Path, module: str, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    proc = run_daemon(module, path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"cloudland-{module}: {path}: {expected}"), proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("module", ["frontend", "agent", "backend"])
def test_daemon_exits_2_on_a_missing_config(tmp_path: Path, module: str) -> None:
    path = tmp_path / "missing.yaml"
    proc = run_daemon(module, path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr == f"cloudland-{module}: {path}: cannot read: No such file or directory\n"


def test_a_backend_offers_its_capacity_or_the_whole_machine(tmp_path: Path) -> None:
    """``info`` reports what the scheduler places instances within: the ``capacity:`` given, else the machine."""
    machine = info("", str(tmp_path), "", CapacitySection(), {})
    assert machine["cpus"] == os.cpu_count() and machine["memory_total"] > 0 and machine["disk_total"] > 0
    share = info("", str(tmp_path), "", CapacitySection(vcpus=1, memory_mb=2048, disk_gb=7), {})
    assert (share["cpus"], share["memory_total"], share["disk_total"]) == (1, 2048 << 20, 7 << 30)
    assert share["memory_available"] == pytest.approx(machine["memory_available"], rel=0.5)  # the machine's, as is
