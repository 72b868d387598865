"""Daemon configuration: YAML files read into checked dataclasses.

Every mistake is reported as ``ConfigError`` naming the file, the field and the reason, so a
daemon with a wrong config exits at once with a message an operator can act on.
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sci import TreeSettings

__all__ = ["ConfigError", "FrontendConfig", "AgentConfig", "BackendConfig", "load"]


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class TreeSection:
    """The ``tree:`` block: where this node listens and the tree's tunables."""

    listen: str = ""
    advertise: str | None = None
    settings: TreeSettings = field(default_factory=TreeSettings)


@dataclass(frozen=True)
class FrontendConfig:
    node_id: str = "root"
    data_dir: str = "/var/lib/cloudland/frontend"
    control_socket: str = "/run/cloudland/frontend.sock"
    log_level: str = "info"
    tree: TreeSection = field(default_factory=lambda: TreeSection(listen="tcp://0.0.0.0:7700"))


@dataclass(frozen=True)
class AgentConfig:
    node_id: str = ""
    frontend: str = "tcp://127.0.0.1:7700"
    log_level: str = "info"
    tree: TreeSection = field(default_factory=lambda: TreeSection(listen="tcp://0.0.0.0:7710"))


@dataclass(frozen=True)
class BackendConfig:
    node_id: str = ""
    frontend: str = "tcp://127.0.0.1:7700"
    data_dir: str = "/var/lib/cloudland/backend"
    groups: tuple[str, ...] = ()
    ops_modules: tuple[str, ...] = ()
    workers: int = 16
    journal_fsync: bool = True
    log_level: str = "info"
    tree: TreeSection = field(default_factory=TreeSection)


C = TypeVar("C", FrontendConfig, AgentConfig, BackendConfig)

_SCALARS = {"node_id": str, "data_dir": str, "control_socket": str, "log_level": str, "frontend": str,
            "workers": int, "journal_fsync": bool}


def load(kind: type[C], path: str | Path | None) -> C:
    """Read ``path`` (or take every default if None) into ``kind``."""
    raw: Any = {}
    where = str(path) if path else "defaults"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of settings")
    return _build(kind, raw, where)


def _build(kind: type[C], raw: dict[str, Any], where: str) -> C:
    known = {f.name: f for f in dataclasses.fields(kind)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: {key}: unknown setting (known: {', '.join(sorted(known))})")
        if key == "tree":
            values[key] = _tree(value, getattr(kind(), "tree"), where)
        elif key in ("groups", "ops_modules"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key}: must be a list of strings")
            values[key] = tuple(value)
        else:
            want = _SCALARS[key]
            if value is None and key == "node_id":
                continue
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"{where}: {key}: must be a {want.__name__} (got {value!r})")
            values[key] = value
    config = kind(**values)
    if not config.node_id:
        config = dataclasses.replace(config, node_id=socket.gethostname().split(".")[0])
    from sci import proto
    from sci.exceptions import FrameError

    try:
        proto.check_node_id(config.node_id)
    except FrameError as exc:
        raise ConfigError(f"{where}: node_id: {exc}") from None
    if config.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: log_level: must be debug, info, warning or error (got {config.log_level!r})")
    if isinstance(config, BackendConfig) and not 1 <= config.workers <= 1024:
        raise ConfigError(f"{where}: workers: must be between 1 and 1024 (got {config.workers})")
    return config


def _tree(raw: Any, default: TreeSection, where: str) -> TreeSection:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: tree: must be a mapping")
    tunables = {f.name: f.type for f in dataclasses.fields(TreeSettings)}
    listen, advertise = default.listen, default.advertise
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "listen":
            if not isinstance(value, str) or "://" not in value:
                raise ConfigError(f"{where}: tree.listen: must be an endpoint like tcp://0.0.0.0:7700")
            listen = value
        elif key == "advertise":
            if value is not None and (not isinstance(value, str) or "://" not in value):
                raise ConfigError(f"{where}: tree.advertise: must be an endpoint like tcp://host:7700")
            advertise = value
        elif key in tunables:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: tree.{key}: must be a number (got {value!r})")
            settings[key] = int(value) if tunables[key] in (int, "int") else float(value)
        else:
            raise ConfigError(f"{where}: tree.{key}: unknown setting")
    try:
        tree_settings = TreeSettings(**settings).validate()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return TreeSection(listen, advertise, tree_settings)
