"""Daemon configuration: YAML files read into checked dataclasses.

Every mistake is reported as ``ConfigError`` naming the file, the field and the reason, so a
daemon with a wrong config exits at once with a message an operator can act on.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sci import TreeSettings
from sci.security import SecurityError, check_key

__all__ = ["AgentConfig", "ApiSection", "BackendConfig", "ComputeSection", "ConfigError", "FrontendConfig",
           "LeadershipSection", "SchedulerSection", "check_leadership", "load"]


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class TreeSection:
    """The ``tree:`` block: where this node listens, its CURVE identity and the tree's tunables."""

    listen: str = ""
    advertise: str | None = None
    settings: TreeSettings = field(default_factory=TreeSettings)
    #: CURVE on every link; false only in a lab (anyone who reaches the tree's ports may join it)
    curve: bool = True
    #: this node's key pair (made on first start, mode 0600); empty: the daemon's place under data_dir
    key_file: str = ""
    #: agents and backends: the root's public key; empty: the one the enrolment token carried
    root_key: str = ""


@dataclass(frozen=True)
class ApiSection:
    """The ``api:`` block of the frontend: where the REST API listens, how long tokens last, and its limits."""

    host: str = "127.0.0.1"
    port: int = 8080
    token_ttl_s: int = 43200
    #: logins (POST /v1/tokens) a minute per source address, after a burst of login_burst
    login_rate_per_min: int = 60
    login_burst: int = 20
    #: failed logins a minute per user name, after a burst of login_failures_burst
    login_failures_per_min: int = 5
    login_failures_burst: int = 10
    #: calls a second per token, after a burst of token_burst
    token_rate_per_s: int = 50
    token_burst: int = 200
    #: largest request body, in bytes (image uploads have their own limit)
    max_body_bytes: int = 1 << 20
    #: a live console with no byte either way for this long is closed
    console_idle_timeout_s: float = 900.0
    #: how hypervisors reach this API (to fetch images); empty: https://<host>:<port> (http:// without tls)
    public_url: str = ""
    #: serve TLS; false only behind a TLS-terminating proxy on this host
    tls: bool = True
    #: PEM certificate (chain) and unencrypted key; both empty: a self-signed pair in <data_dir>/tls
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def url(self) -> str:
        return self.public_url.rstrip("/") or f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class SchedulerSection:
    """The ``scheduler:`` block: overcommit ratios and launch retries."""

    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    max_attempts: int = 3
    #: seconds a launch (image download, boot) may take on a host before it counts as failed
    launch_timeout_s: float = 600.0


@dataclass(frozen=True)
class LeadershipSection:
    """The ``leadership:`` block: the lease standby frontends elect a leader with (PostgreSQL), in seconds.

    A leader whose process died (its database session ended) is replaced within about
    ``3 x renew_s``, whatever the lease; one that is alive but silent (stopped, partitioned) within
    ``lease_s + renew_s``.  A leader that cannot renew for ``lease_s - margin_s`` steps down: a
    shorter lease replaces a silent leader sooner, and makes a leader that a loaded machine or
    a slow database holds up for that long step down when it need not (docs/ha.md)."""

    lease_s: float = 8.0
    renew_s: float = 0.5
    #: how long before the lease runs out (by the database's clock) the leader has stopped leading
    margin_s: float = 2.5


@dataclass(frozen=True)
class FrontendConfig:
    node_id: str = "root"
    data_dir: str = "/var/lib/cloudland/frontend"
    #: a SQLAlchemy URL; empty means SQLite in data_dir/cloudland.db
    database: str = ""
    control_socket: str = "/run/cloudland/frontend.sock"
    log_level: str = "info"
    #: seconds between comparisons of what hosts run with what the state says
    reconcile_interval_s: float = 60.0
    #: whether the reconcile deletes, on a host, instances this cloud deleted or placed elsewhere
    #: (a launch's attempt or a delete that could not reach the host); unknown ones are only reported
    reap_leftovers: bool = True
    #: seconds a task waits for a hypervisor that is away from the tree (restarting, re-attaching)
    #: before "host is down" fails it
    host_wait_s: float = 300.0
    #: days audit records are kept; 0 keeps them forever
    audit_retention_days: int = 365
    #: days events are kept; 0 keeps them forever
    event_retention_days: int = 90
    api: ApiSection = field(default_factory=ApiSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    tree: TreeSection = field(default_factory=lambda: TreeSection(listen="tcp://0.0.0.0:7700"))
    leadership: LeadershipSection = field(default_factory=LeadershipSection)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{Path(self.data_dir) / 'cloudland.db'}"

    @property
    def key_path(self) -> Path:
        """The tree root's CURVE key pair."""
        return Path(self.tree.key_file or Path(self.data_dir) / "tree" / "root.key")


@dataclass(frozen=True)
class AgentConfig:
    node_id: str = ""
    #: every frontend's tree endpoint (standby frontends: the node joins whichever one leads)
    frontend: tuple[str, ...] = ("tcp://127.0.0.1:7700",)
    #: where the agent keeps its CURVE key pair and the root's public key
    data_dir: str = "/var/lib/cloudland/agent"
    #: a file holding the one-time token (cl1.…) this node enrols with at its first start
    enrolment_token_file: str = ""
    log_level: str = "info"
    tree: TreeSection = field(default_factory=lambda: TreeSection(listen="tcp://0.0.0.0:7710"))

    @property
    def key_path(self) -> Path:
        return Path(self.tree.key_file or Path(self.data_dir) / "tree.key")


@dataclass(frozen=True)
class ComputeSection:
    """The ``compute:`` block of a backend running the libvirt driver (``ops_modules: [backend.compute]``)."""

    uri: str = "qemu:///system"
    #: kvm, qemu (software emulation) or auto (kvm if /dev/kvm really runs a guest)
    domain_type: str = "auto"
    #: per-instance files (seed ISO, console log); empty: <data_dir>/instances
    instances_dir: str = ""
    #: the libvirt storage pool's directory (overlays, volumes); empty: <data_dir>/pool
    pool_dir: str = ""
    #: kernel command line for images that boot a kernel directly.  no_timer_check: a guest's
    #: kernel otherwise panics at boot ("IO-APIC + timer doesn't work") when its vCPU is not run
    #: during the few loops it gives the timer, which happens on any busy, overcommitted host;
    #: the check is for miswired boards, and a hypervisor's emulated timer always works.
    cmdline: str = "console=ttyS0 no_timer_check"
    #: seconds a graceful (ACPI) shutdown may take before the instance is powered off
    stop_timeout_s: float = 60.0
    #: PEM file of the CA (or self-signed certificate) that the frontend's API is trusted by, for
    #: image downloads; empty: the system's CAs
    frontend_ca_file: str = ""
    #: days a cached image no instance here uses is kept after its last launch here; 0: no age limit
    image_cache_max_age_days: float = 7.0
    #: GB the image cache may hold (images instances use count, but are never evicted); 0: no limit
    image_cache_max_gb: float = 0.0


@dataclass(frozen=True)
class NetworkSection:
    """The ``network:`` block of a backend running the network driver (``ops_modules: [backend.network]``)."""

    #: this hypervisor's underlay address: the local end of its VXLAN tunnels (required)
    vtep: str = ""
    #: the underlay's MTU; tenant segments get 50 bytes less (VXLAN's headers), and DHCP says so
    underlay_mtu: int = 1500
    vxlan_port: int = 4789
    #: starts the name of every namespace the driver makes; hypervisors sharing one kernel (a
    #: local cloud's namespace hypervisors) need one each
    namespace_prefix: str = "cl-"
    #: where libvirtd's taps appear when the backend runs in another network namespace (a name
    #: under /run/netns, or a path like /proc/1/ns/net); empty: in the backend's own
    tap_netns: str = ""
    #: this host's interface on the external network (a bridge: routers' floating IPs are
    #: plugged into it, and their SNATed egress leaves by it); empty: no SNAT, no floating IPs
    external_interface: str = ""
    #: link-local /30s between the host and its routers, one per router with SNAT
    transit_cidr: str = "169.254.192.0/18"
    #: DHCP servers' files; empty: <data_dir>/network
    state_dir: str = ""


@dataclass(frozen=True)
class CapacitySection:
    """The ``capacity:`` block: what this hypervisor offers to instances, where that is less than the
    machine (room kept for the host itself, or several hypervisors sharing one machine)."""

    #: 0: every CPU, all the memory, the whole file system of data_dir
    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0


@dataclass(frozen=True)
class BackendConfig:
    node_id: str = ""
    #: every frontend's tree endpoint (standby frontends: the node joins whichever one leads)
    frontend: tuple[str, ...] = ("tcp://127.0.0.1:7700",)
    data_dir: str = "/var/lib/cloudland/backend"
    #: the availability zone this hypervisor belongs to, reported to the frontend's scheduler
    zone: str = ""
    groups: tuple[str, ...] = ()
    ops_modules: tuple[str, ...] = ()
    workers: int = 16
    journal_fsync: bool = True
    log_level: str = "info"
    #: host:port for a local Prometheus /metrics of this backend's counters; empty: off
    metrics_listen: str = ""
    #: a file holding the one-time token (cl1.…) this node enrols with at its first start
    enrolment_token_file: str = ""
    capacity: CapacitySection = field(default_factory=CapacitySection)
    compute: ComputeSection = field(default_factory=ComputeSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    tree: TreeSection = field(default_factory=TreeSection)

    @property
    def key_path(self) -> Path:
        return Path(self.tree.key_file or Path(self.data_dir) / "tree.key")


C = TypeVar("C", FrontendConfig, AgentConfig, BackendConfig)

_SCALARS = {"node_id": str, "data_dir": str, "control_socket": str, "log_level": str,
            "workers": int, "journal_fsync": bool, "database": str, "zone": str, "reconcile_interval_s": float,
            "reap_leftovers": bool, "host_wait_s": float,
            "metrics_listen": str, "enrolment_token_file": str, "audit_retention_days": int,
            "event_retention_days": int}
_SECTIONS: dict[str, type[Any]] = {"api": ApiSection, "scheduler": SchedulerSection, "leadership": LeadershipSection,
                                   "compute": ComputeSection, "network": NetworkSection, "capacity": CapacitySection}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}


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
            values[key] = _tree(value, kind().tree, where, listens=kind is not BackendConfig,
                                is_root=kind is FrontendConfig)
        elif key in _SECTIONS:
            values[key] = _section(key, _SECTIONS[key], value, where)
        elif key == "frontend":
            values[key] = _frontends(value, where)
        elif key in ("groups", "ops_modules"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key}: must be a list of strings")
            values[key] = tuple(value)
        else:
            if value is None and key == "node_id":
                continue
            values[key] = _scalar(key, _SCALARS[key], value, where)
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
    if isinstance(config, BackendConfig):
        _between(where, "workers", config.workers, 1, 1024)
    if isinstance(config, BackendConfig) and config.zone and not _ZONE.fullmatch(config.zone):
        raise ConfigError(f"{where}: zone: must be 1-64 letters, digits, '.', '_' or '-' (got {config.zone!r})")
    if isinstance(config, FrontendConfig):
        _check_frontend(config, where)
    if isinstance(config, BackendConfig):
        for name in ("vcpus", "memory_mb", "disk_gb"):
            if not 0 <= getattr(config.capacity, name) <= 1 << 40:
                raise ConfigError(f"{where}: capacity.{name}: must be 0 (all the machine has) or more "
                                  f"(got {getattr(config.capacity, name)})")
        _check_compute(config.compute, where)
        if "backend.network" in config.ops_modules:
            _check_network(config.network, where)
    return config


def _frontends(value: Any, where: str) -> tuple[str, ...]:
    """``frontend:``: one tree endpoint, or a list of them (one per standby frontend)."""
    endpoints = [value] if isinstance(value, str) else value
    if not isinstance(endpoints, list) or not endpoints or not all(isinstance(e, str) for e in endpoints):
        raise ConfigError(f"{where}: frontend: must be an endpoint or a list of endpoints (got {value!r})")
    for endpoint in endpoints:
        if "://" not in endpoint:
            raise ConfigError(f"{where}: frontend: must be an endpoint like tcp://controller:7700 (got {endpoint!r})")
    if len(set(endpoints)) != len(endpoints):
        raise ConfigError(f"{where}: frontend: lists an endpoint twice")
    return tuple(endpoints)


_ZONE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _scalar(name: str, want: type[Any], value: Any, where: str) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{where}: {name}: must be {_TYPE_NAMES[want]} (got {value!r})")
    if want is float and not math.isfinite(value):
        raise ConfigError(f"{where}: {name}: must be a finite number (got {value!r})")
    return value


def _section(name: str, kind: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {name}: must be a mapping")
    fields = {f.name: f.type for f in dataclasses.fields(kind)}
    types = {"str": str, "int": int, "float": float, "bool": bool}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{where}: {name}.{key}: unknown setting (known: {', '.join(sorted(fields))})")
        want = fields[key]
        values[key] = _scalar(f"{name}.{key}", types[want] if isinstance(want, str) else want, value, where)
    return kind(**values)


def _number(value: float) -> str:
    """A setting's number as its operator would write it: 600, not 600.0; 1073741824, not 1.07e+09."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _between(where: str, name: str, value: float, low: float, high: float, low_means: str = "") -> None:
    """Refuse ``value`` outside [low, high], naming the setting; ``low_means``: what the low end does."""
    if not low <= value <= high:
        means = f" ({low_means})" if low_means else ""
        raise ConfigError(f"{where}: {name}: must be between {_number(low)}{means} and {_number(high)} "
                          f"(got {_number(value)})")


def _check_compute(compute: ComputeSection, where: str) -> None:
    if compute.domain_type not in ("auto", "kvm", "qemu"):
        raise ConfigError(f"{where}: compute.domain_type: must be auto, kvm or qemu (got {compute.domain_type!r})")
    if "://" not in compute.uri:
        raise ConfigError(f"{where}: compute.uri: must be a libvirt URI like qemu:///system (got {compute.uri!r})")
    _between(where, "compute.stop_timeout_s", compute.stop_timeout_s, 0, 3600)
    _between(where, "compute.image_cache_max_age_days", compute.image_cache_max_age_days, 0, 36500, "no age limit")
    _between(where, "compute.image_cache_max_gb", compute.image_cache_max_gb, 0, 1_000_000, "no limit")


_NAMESPACE_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


def _check_network(network: NetworkSection, where: str) -> None:
    try:
        ipaddress.IPv4Address(network.vtep)
    except ValueError:
        raise ConfigError(f"{where}: network.vtep: must be this host's underlay IPv4 address "
                          f"(got {network.vtep!r})") from None
    _between(where, "network.underlay_mtu", network.underlay_mtu, 1280, 65535)
    _between(where, "network.vxlan_port", network.vxlan_port, 1, 65535)
    try:
        transit = ipaddress.IPv4Network(network.transit_cidr)
    except ValueError:
        transit = None
    if transit is None or transit.prefixlen > 28:
        raise ConfigError(f"{where}: network.transit_cidr: must be an IPv4 network of at least /28, like "
                          f"169.254.192.0/18 (got {network.transit_cidr!r})")
    if not _NAMESPACE_PREFIX.fullmatch(network.namespace_prefix):
        raise ConfigError(f"{where}: network.namespace_prefix: must be 1-32 letters, digits, '.', '_' or '-' "
                          f"(got {network.namespace_prefix!r})")


def _check_frontend(config: FrontendConfig, where: str) -> None:
    if config.database and "://" not in config.database:
        raise ConfigError(f"{where}: database: must be a URL like postgresql+psycopg://user@host/db "
                          f"(got {config.database!r})")
    if config.api.public_url and not config.api.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: api.public_url: must be an http:// or https:// URL (got {config.api.public_url!r})")
    _between(where, "api.port", config.api.port, 1, 65535)
    if bool(config.api.tls_cert) != bool(config.api.tls_key):
        unset = "api.tls_key" if config.api.tls_cert else "api.tls_cert"
        raise ConfigError(f"{where}: {unset}: must be set with the other of api.tls_cert and api.tls_key "
                          "(or leave both empty for a generated self-signed pair)")
    if config.api.tls_cert and not config.api.tls:
        raise ConfigError(f"{where}: api.tls_cert: set, but api.tls is false; remove one of them")
    _between(where, "api.token_ttl_s", config.api.token_ttl_s, 60, 31 * 86400)
    for name in ("login_rate_per_min", "login_burst", "login_failures_per_min", "login_failures_burst",
                 "token_rate_per_s", "token_burst"):
        _between(where, f"api.{name}", getattr(config.api, name), 1, 1_000_000)
    _between(where, "api.max_body_bytes", config.api.max_body_bytes, 4096, 1 << 30)
    _between(where, "api.console_idle_timeout_s", config.api.console_idle_timeout_s, 5, 86400)
    sched = config.scheduler
    for ratio in ("cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio"):
        _between(where, f"scheduler.{ratio}", getattr(sched, ratio), 0.1, 100)
    _between(where, "scheduler.max_attempts", sched.max_attempts, 1, 20)
    _between(where, "scheduler.launch_timeout_s", sched.launch_timeout_s, 1, 86400)
    _between(where, "reconcile_interval_s", config.reconcile_interval_s, 1, 86400)
    _between(where, "host_wait_s", config.host_wait_s, 0, 86400)
    for name in ("audit_retention_days", "event_retention_days"):
        _between(where, name, getattr(config, name), 0, 36500, "keep forever")
    check_leadership(config.leadership, where)


def check_leadership(lease: LeadershipSection, where: str) -> None:
    _between(where, "leadership.renew_s", lease.renew_s, 0.05, 60)
    _between(where, "leadership.margin_s", lease.margin_s, 0.1, 60)
    _between(where, "leadership.lease_s", lease.lease_s, 0.5, 600)
    # Two renewals at least before the leader gives up: one slow statement must not end its term.
    if lease.lease_s - lease.margin_s < 2 * lease.renew_s:
        raise ConfigError(f"{where}: leadership.lease_s: must leave at least two renewals (2 x renew_s = "
                          f"{2 * lease.renew_s:g}) before the leader gives up at lease_s - margin_s "
                          f"(got {lease.lease_s:g} - {lease.margin_s:g})")


def _tree(raw: Any, default: TreeSection, where: str, listens: bool, is_root: bool) -> TreeSection:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: tree: must be a mapping")
    tunables = {f.name: f.type for f in dataclasses.fields(TreeSettings)}
    listen, advertise = default.listen, default.advertise
    identity: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("listen", "advertise") and not listens:
            raise ConfigError(f"{where}: tree.{key}: a backend is a leaf and listens nowhere; remove it")
        if key in ("curve", "key_file", "root_key"):
            identity[key] = _tree_identity(key, value, where, is_root)
            continue
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
    return dataclasses.replace(default, listen=listen, advertise=advertise, settings=tree_settings, **identity)


def _tree_identity(key: str, value: Any, where: str, is_root: bool) -> Any:
    """tree.curve, tree.key_file or tree.root_key, checked."""
    if key == "curve":
        return _scalar("tree.curve", bool, value, where)
    if key == "root_key" and is_root:
        raise ConfigError(f"{where}: tree.root_key: the frontend is the root, its key pair is tree.key_file; "
                          "remove it")
    value = _scalar(f"tree.{key}", str, value, where)
    if key == "root_key" and value:
        try:
            check_key(value)
        except SecurityError:
            raise ConfigError(f"{where}: tree.root_key: must be the frontend's public key, 40 characters of Z85 "
                              f"(got {value[:48]!r})") from None
    return value
