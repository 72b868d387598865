"""Every request clctl makes goes through :class:`Api`, and every way one can fail ends up as a
:class:`ClctlError` carrying the exit status scripts see.

The API answers errors as ``{"error": {"code", "message", "field", "reason"}}``; its message
already names the field (``vcpus: must be at least 1``), so that is what the user reads.
"""

from __future__ import annotations

import ssl
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import click
import httpx

__all__ = ["DEFAULT_TIMEOUT", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE", "EXIT_USAGE", "Api", "ClctlError",
           "http_client", "url"]

EXIT_OK = 0
#: the API refused the request, or a task that was waited for failed
EXIT_REFUSED = 1
#: click's own usage errors, and a config file clctl cannot use
EXIT_USAGE = 2
#: the API cannot be reached, or there is no (valid) token: log in and try again
EXIT_UNREACHABLE = 3

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ClctlError(click.ClickException):
    """Printed as ``Error: <message>`` on stderr; clctl exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED, *, code: str | None = None,
                 field: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        # click declares exit_code per class; one class with the code per instance is simpler to raise.
        self.exit_code = exit_code  # type: ignore[misc]
        #: the API's error code (``invalid``, ``not_found``, ...), when the API answered one
        self.code = code
        self.field = field
        self.status = status


def http_client(endpoint: str, timeout: httpx.Timeout, ca_file: str | None) -> httpx.Client:
    """The one place a connection to the API is made; tests swap it for an in-process app.

    ``ca_file`` is what the API's certificate is checked against; None means the system's CAs.
    """
    verify: ssl.SSLContext | bool = True
    if ca_file:
        try:
            verify = ssl.create_default_context(cafile=ca_file)
        except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
            raise ClctlError(f"cannot use the CA file {ca_file}: {exc.strerror or exc}", EXIT_USAGE) from None
    return httpx.Client(base_url=endpoint, timeout=timeout, headers={"User-Agent": "clctl"}, verify=verify)


def url(*parts: str) -> str:
    """``/v1/<parts>``, each part quoted whole: names and ids from the user never become extra path segments."""
    return "/v1/" + "/".join(quote(str(p), safe="") for p in parts)


class Api:
    """A client of one endpoint, as one user (``token``); opens its connection on first use."""

    def __init__(self, endpoint: str, token: str | None, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 ca_file: str | None = None) -> None:
        self.endpoint = endpoint
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self._http: httpx.Client | None = None

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                content: Iterable[bytes] | None = None, headers: Mapping[str, str] | None = None,
                auth: bool = True) -> Any:
        """The answer's JSON body (None for an empty one); raises :class:`ClctlError` for anything else."""
        sent = dict(headers or {})
        if auth:
            if not self.token:
                raise ClctlError("not logged in: run 'clctl login' (or set CLOUDLAND_TOKEN)", EXIT_UNREACHABLE)
            sent["Authorization"] = f"Bearer {self.token}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if self._http is None:
            self._http = http_client(self.endpoint, self.timeout, self.ca_file)
        try:
            response = self._http.request(method, path, json=json, params=query, content=content, headers=sent)
        except httpx.TimeoutException:
            raise ClctlError(f"the API at {self.endpoint} did not answer {method} {path} in time",
                             EXIT_UNREACHABLE) from None
        except httpx.TransportError as exc:
            raise ClctlError(f"cannot reach the API at {self.endpoint}: {self._why(exc)}", EXIT_UNREACHABLE) from None
        if not response.is_success:
            raise _refusal(method, path, response, auth)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClctlError(f"{method} {path}: the API answered HTTP {response.status_code} with a body that is "
                             "not JSON") from None

    def _why(self, exc: httpx.TransportError) -> str:
        untrusted = _certificate_error(exc)
        if untrusted is not None:
            by = f"by {self.ca_file}" if self.ca_file else "by this system's CAs"
            return (f"its TLS certificate is not trusted {by} ({untrusted.verify_message}); pass --ca-file with "
                    "the certificate of the CA that signed it (the frontend's <data_dir>/tls/api.crt for the one it "
                    "generates), to 'clctl login' to keep using it, or set CLOUDLAND_CA_FILE")
        why = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.RemoteProtocolError) and self.endpoint.startswith("http://"):
            # What a TLS-only server does to a plain HTTP request: close the connection unanswered.
            return f"{why} (if the API serves TLS, as it does by default, use https://)"
        return why


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The failed certificate check somewhere down ``exc``'s chain of causes, if that is what happened."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _refusal(method: str, path: str, response: httpx.Response, authenticated: bool) -> ClctlError:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    status = response.status_code
    if isinstance(error, dict):
        code, field = error.get("code"), error.get("field")
        message = str(error.get("message") or error.get("reason") or code)
        text = f"{message} [{code}]" if code else message
    else:
        # Not the API's error shape: a proxy's page, or a route this server does not have (yet).
        code = field = None
        detail = body.get("detail") if isinstance(body, dict) else None
        text = f"{method} {path}: HTTP {status} {detail if isinstance(detail, str) else response.reason_phrase}"
    if status == 401 and authenticated:
        return ClctlError(f"not logged in: {text}; run 'clctl login'", EXIT_UNREACHABLE, code=code, field=field,
                          status=status)
    return ClctlError(text, EXIT_REFUSED, code=code, field=field, status=status)
