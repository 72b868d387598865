"""Daemon configuration: YAML files read into checked dataclasses.

Every mistake is reported as ``ConfigError`` naming the file, the field and the reason, so a
daemon with a wrong config exits at once with a message an operator can act on.
"""

from __future__ import annotations

import dataclasses
import math
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
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def load(kind: type[C], path: str | Path | None) -> C:
    """Read ``path`` (or take every default if None) into ``kind``."""
    raw: Any = {}
    where = str(path) if path is not None else "defaults"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of settings")
    return _build(kind, raw, where)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: PyYAML's own text spans several lines and names no file."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if problem is None:
        return " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def _build(kind: type[C], raw: dict[str, Any], where: str) -> C:
    known = {f.name: f for f in dataclasses.fields(kind)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: {key}: unknown setting (known: {', '.join(sorted(known))})")
        if key == "tree":
            values[key] = _tree(value, kind().tree, where, listens=kind is not BackendConfig)
        elif key in ("groups", "ops_modules"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key}: must be a list of strings")
            values[key] = tuple(value)
        else:
            want = _SCALARS[key]
            if value is None and key == "node_id":
                continue
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"{where}: {key}: must be {_TYPE_NAMES[want]} (got {value!r})")
            if key == "frontend" and "://" not in value:
                raise ConfigError(f"{where}: frontend: must be an endpoint like tcp://controller:7700 (got {value!r})")
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


def _tree(raw: Any, default: TreeSection, where: str, listens: bool) -> TreeSection:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: tree: must be a mapping")
    tunables = {f.name: f.type for f in dataclasses.fields(TreeSettings)}
    listen, advertise = default.listen, default.advertise
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("listen", "advertise") and not listens:
            raise ConfigError(f"{where}: tree.{key}: a backend is a leaf and listens nowhere; remove it")
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
            if tunables[key] in (int, "int"):
                if isinstance(value, float) and not value.is_integer():
                    raise ConfigError(f"{where}: tree.{key}: must be a whole number (got {value!r})")
                settings[key] = int(value)
            else:
                try:
                    settings[key] = float(value)
                except OverflowError:
                    raise ConfigError(f"{where}: tree.{key}: must be a finite number (too large)") from None
                if not math.isfinite(settings[key]):
                    raise ConfigError(f"{where}: tree.{key}: must be a finite number (got {value!r})")
        else:
            raise ConfigError(f"{where}: tree.{key}: unknown setting")
    try:
        tree_settings = TreeSettings(**settings).validate()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return TreeSection(listen, advertise, tree_settings)
