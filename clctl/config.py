"""Where clctl finds the API and its token: options, then the environment, then a file.

``clctl login`` writes ``$XDG_CONFIG_HOME/cloudland/clctl.yaml`` (default ``~/.config/...``)::

    endpoint: https://127.0.0.1:8080
    token: <bearer token>
    ca_file: /path/to/api.crt      # only when the API's certificate needs one to be trusted

A cloud with several frontends (``docs/ha.md``) has ``endpoints:``, a list, instead of
``endpoint:``; clctl tries them in turn (``client.py``).  The saved ``ca_file`` belongs to the
saved endpoints: a command sent elsewhere trusts the system's CAs unless given a CA file of
its own.

The file holds a live credential, so it is written with mode 0600, by replacing it whole: a
reader never sees half a file, and a file that was once world-readable does not stay so.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from .client import EXIT_UNREACHABLE, EXIT_USAGE, ClctlError

__all__ = ["DEFAULT_ENDPOINT", "Settings", "answered_last_first", "check_endpoints", "config_file", "forget_token",
           "load", "remember_answered", "resolve", "save_login"]

#: The API of a frontend on this machine with the default ``api.port``.
DEFAULT_ENDPOINT = "https://127.0.0.1:8080"


@dataclass(frozen=True)
class Settings:
    #: one or more: the frontends of one cloud, tried in turn
    endpoints: tuple[str, ...]
    token: str | None
    #: the PEM file the API's certificate is checked against; None: the system's CAs
    ca_file: str | None = None
    #: the file of the login that saved both the endpoints and the token; None when either came
    #: from an option or the environment
    login_file: Path | None = None

    @property
    def endpoint(self) -> str:
        """The first endpoint: the one named where a message needs one."""
        return self.endpoints[0]


def config_file() -> Path:
    """``$XDG_CONFIG_HOME/cloudland/clctl.yaml``; the XDG spec says to ignore a relative value."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "cloudland" / "clctl.yaml"


def load() -> dict[str, Any]:
    """The file's settings; empty when there is no file yet."""
    path = config_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClctlError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClctlError(f"{path} is not valid YAML: {exc}", EXIT_USAGE) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClctlError(f"{path} must be a YAML map with 'endpoint' and 'token'", EXIT_USAGE)
    for key in ("endpoint", "token", "ca_file"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ClctlError(f"{path}: {key} must be a string", EXIT_USAGE)
    listed = data.get("endpoints")
    if listed is not None and (not isinstance(listed, list) or not listed
                               or not all(isinstance(e, str) for e in listed)):
        raise ClctlError(f"{path}: endpoints must be a list of URLs", EXIT_USAGE)
    return data


def check_endpoint(endpoint: str) -> str:
    if not endpoint.startswith(("http://", "https://")):
        raise ClctlError(f"cannot reach the API at {endpoint!r}: the endpoint must be an http:// or https:// URL",
                         EXIT_UNREACHABLE)
    return endpoint.rstrip("/")


def check_endpoints(given: Sequence[str]) -> tuple[str, ...]:
    """Each of ``given`` may itself be a comma-separated list (``CLOUDLAND_ENDPOINT=https://a,https://b``);
    the URLs in order, each once."""
    urls = [check_endpoint(part.strip()) for value in given for part in value.split(",") if part.strip()]
    return tuple(dict.fromkeys(urls))


def _saved_endpoints(saved: dict[str, Any]) -> tuple[str, ...]:
    listed = saved.get("endpoints") or ([saved["endpoint"]] if saved.get("endpoint") else [])
    return check_endpoints(listed)


def resolve(endpoints: Sequence[str], token: str | None, ca_file: str | None = None) -> Settings:
    """``endpoints``/``token``/``ca_file`` come from the options or the environment (click merges those two)."""
    given = check_endpoints(endpoints)
    saved = load() if not given or token is None or ca_file is None else {}
    chosen = given or _saved_endpoints(saved) or (DEFAULT_ENDPOINT,)
    if ca_file is None and set(chosen) <= set(_saved_endpoints(saved)):
        ca_file = saved.get("ca_file")
    from_login = not given and not token and bool(saved.get("token")) and bool(_saved_endpoints(saved))
    # Absolute, so that the saved path still names the file when clctl runs from elsewhere.
    return Settings(chosen, token or saved.get("token") or None, os.path.abspath(ca_file) if ca_file else None,
                    config_file() if from_login else None)


def _last_endpoint_file() -> Path:
    # Beside the config file, whose endpoints it orders; apart from it, so that remembering
    # never rewrites the file that holds the token.
    return config_file().with_name("clctl.last-endpoint")


def answered_last_first(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    """``endpoints`` with the one that answered the last call first: likely the leader still."""
    if len(endpoints) < 2:
        return endpoints
    try:
        last = _last_endpoint_file().read_text().strip()
    except OSError:
        return endpoints
    return (last, *(e for e in endpoints if e != last)) if last in endpoints else endpoints


def remember_answered(endpoint: str) -> None:
    """Start with ``endpoint`` next time; written only when a call had to move on, so rarely."""
    path = _last_endpoint_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(endpoint + "\n")
    except OSError:  # a hint for speed only: the endpoints are all tried anyway
        pass


def _write(data: dict[str, Any]) -> Path:
    path = config_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp creates the file 0600, before a byte of the token is in it.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".clctl-", suffix=".yaml")
    except OSError as exc:
        raise ClctlError(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(data, f, default_flow_style=False, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ClctlError(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE) from None
        raise
    return path


def save_login(endpoints: Sequence[str], token: str, ca_file: str | None) -> Path:
    """Remember the endpoints, token and CA file (if any); other keys a user put in the file are kept.

    One endpoint is saved as ``endpoint:``, as clctl always did; several as ``endpoints:``.
    """
    data = {k: v for k, v in load().items() if k not in ("endpoint", "endpoints", "ca_file")}
    data.update({"endpoint": endpoints[0]} if len(endpoints) == 1 else {"endpoints": list(endpoints)})
    data["token"] = token
    return _write({**data, "ca_file": ca_file} if ca_file else data)


def forget_token(token: str) -> bool:
    """Drop the saved token if it is ``token`` (not one that came from elsewhere); True if it was."""
    data = load()
    if data.get("token") != token:
        return False
    del data["token"]
    _write(data)
    return True
