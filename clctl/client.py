"""Every request clctl makes goes through :class:`Api`, and every way one can fail ends up as a
:class:`ClctlError` carrying the exit status scripts see.

The API answers errors as ``{"error": {"code", "message", "field", "reason"}}``; its message
already names the field (``vcpus: must be at least 1``), so that is what the user reads.

A cloud may have several frontends (``docs/ha.md``).  A call goes to the endpoint that answered
last, and moves on to the next one when it cannot have been acted on: the connection was never
made (refused, timed out, TLS refused), or a standby answered 503 ``not_leading``; and when its
frontend broke off or did not answer in time (killed in the middle of the call, say).  That is
safe for a change too: each carries an ``Idempotency-Key`` of its own, the same on every
endpoint tried, and the API does a call sent again with its key once (a repeat of one that
already answered gets the same answer; one whose first send made its change but never
answered is refused, 409).  A call that a frontend answered, whatever the answer, is not sent
again.
"""

from __future__ import annotations

import ssl
import uuid
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote, urlencode

import click
import httpx
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.asyncio.client import ClientConnection, connect

__all__ = ["DEFAULT_TIMEOUT", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE", "EXIT_USAGE", "NOT_LEADING", "Api",
           "ClctlError", "http_client", "url"]

EXIT_OK = 0
#: the API refused the request, or a task that was waited for failed
EXIT_REFUSED = 1
#: click's own usage errors, and a config file clctl cannot use
EXIT_USAGE = 2
#: the API cannot be reached, or there is no (valid) token: log in and try again
EXIT_UNREACHABLE = 3

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

#: methods that change nothing: sent again without a key
READS = frozenset({"GET", "HEAD"})

#: the error code of a 503 from a frontend that does not lead and so did nothing with the call
NOT_LEADING = "not_leading"


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
    """The one place an HTTP connection to the API is made; tests swap it for an in-process app.

    ``ca_file`` is what the API's certificate is checked against; None means the system's CAs.
    """
    verify: ssl.SSLContext | bool = _trust(ca_file) if ca_file else True
    return httpx.Client(base_url=endpoint, timeout=timeout, headers={"User-Agent": "clctl"}, verify=verify)


def _trust(ca_file: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
        raise ClctlError(f"cannot use the CA file {ca_file}: {exc.strerror or exc}", EXIT_USAGE) from None


def url(*parts: str) -> str:
    """``/v1/<parts>``, each part quoted whole: names and ids from the user never become extra path segments."""
    return "/v1/" + "/".join(quote(str(p), safe="") for p in parts)


class _Missed(Exception):
    """The call did not reach a frontend that serves it, so another endpoint may take it."""


class Api:
    """A client of one cloud, as one user (``token``): its endpoints are tried in the order given,
    starting with the one that answered last; each connection is opened on first use.

    ``on_answered(endpoint)`` is told which endpoint answered a call whenever that is not the
    one tried first, so that the caller may start there next time.  ``unreachable_note`` ends
    the error of a call that reached none of them.
    """

    def __init__(self, endpoints: Sequence[str], token: str | None, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 ca_file: str | None = None, on_answered: Callable[[str], None] | None = None,
                 unreachable_note: str | None = None) -> None:
        if not endpoints:
            raise ValueError("an API client needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self.on_answered = on_answered
        self.unreachable_note = unreachable_note
        self._http: dict[str, httpx.Client] = {}

    @property
    def endpoint(self) -> str:
        """The endpoint that answered last (the first one before any call)."""
        return self.endpoints[0]

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self._http.values():
            client.close()
        self._http.clear()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                content: Callable[[], Iterable[bytes]] | None = None, headers: Mapping[str, str] | None = None,
                auth: bool = True) -> Any:
        """The answer's JSON body (None for an empty one); raises :class:`ClctlError` for anything else.

        ``content`` makes a streamed body afresh for each endpoint tried.
        """
        sent = dict(headers or {})
        if method not in READS:
            sent.setdefault("Idempotency-Key", str(uuid.uuid4()))  # one per call, whichever endpoint takes it
        if auth:
            if not self.token:
                raise ClctlError("not logged in: run 'clctl login' (or set CLOUDLAND_TOKEN)", EXIT_UNREACHABLE)
            sent["Authorization"] = f"Bearer {self.token}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        missed: list[tuple[str, str]] = []
        for endpoint in list(self.endpoints):
            try:
                response = self._send(endpoint, method, path, json=json, params=query,
                                      content=content() if content is not None else None, headers=sent)
            except _Missed as exc:
                missed.append((endpoint, str(exc)))
                continue
            self._answered(endpoint)
            break
        else:
            raise _unreachable(missed, self.unreachable_note)
        if not response.is_success:
            raise _refusal(method, path, response, auth)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClctlError(f"{method} {path}: the API answered HTTP {response.status_code} with a body that is "
                             "not JSON") from None

    async def websocket(self, path: str, params: Mapping[str, str]) -> ClientConnection:
        """A WebSocket to ``path``, as this user, on the first endpoint that serves it (a standby
        that does not lead is passed over); a refusal raises :class:`ClctlError` as a call's would.

        websockets' asyncio client, not its threaded one: that one reads TLS on a thread while
        another writes it, and now and then loses a handshake's answer or waits for good on a
        refused handshake's socket (a few in a thousand here)."""
        if not self.token:
            raise ClctlError("not logged in: run 'clctl login' (or set CLOUDLAND_TOKEN)", EXIT_UNREACHABLE)
        missed: list[tuple[str, str]] = []
        for endpoint in list(self.endpoints):
            secure = endpoint.startswith("https://")
            uri = ("wss://" + endpoint.removeprefix("https://") if secure
                   else "ws://" + endpoint.removeprefix("http://")).rstrip("/") + path
            if params:
                uri += "?" + urlencode(params)
            try:
                connection = await connect(uri, additional_headers={"Authorization": f"Bearer {self.token}"},
                                           user_agent_header="clctl", ssl=_trust(self.ca_file) if secure else None,
                                           open_timeout=self.timeout.connect, close_timeout=2)
            except InvalidStatus as exc:
                response = httpx.Response(exc.response.status_code, content=bytes(exc.response.body or b""),
                                          headers=dict(exc.response.headers.raw_items()))
                if response.status_code == 503 and _error_code(response) == NOT_LEADING:
                    missed.append((endpoint, "a standby frontend: it does not lead"))
                    continue
                raise _refusal("WS", path, response, True) from None
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                untrusted = _certificate_error(exc)
                missed.append((endpoint, str(untrusted.verify_message) if untrusted else str(exc) or type(exc).__name__))
                continue
            self._answered(endpoint)
            return connection
        raise _unreachable(missed, self.unreachable_note)

    def _send(self, endpoint: str, method: str, path: str, **request: Any) -> httpx.Response:
        http = self._http.get(endpoint)
        if http is None:
            http = self._http[endpoint] = http_client(endpoint, self.timeout, self.ca_file)
        try:
            response = http.request(method, path, **request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            raise _Missed(self._why(endpoint, exc)) from None
        # Sent, and perhaps acted on: it may go again all the same, since a read changes nothing
        # and a change carries its key.
        except httpx.TimeoutException:
            raise _Missed(f"did not answer {method} {path} in time") from None
        except httpx.TransportError as exc:
            raise _Missed(self._why(endpoint, exc)) from None
        if response.status_code == 503 and _error_code(response) == NOT_LEADING:
            raise _Missed("a standby frontend: it does not lead")
        return response

    def _answered(self, endpoint: str) -> None:
        if endpoint == self.endpoints[0]:
            return
        self.endpoints.remove(endpoint)
        self.endpoints.insert(0, endpoint)
        if self.on_answered is not None:
            self.on_answered(endpoint)

    def _why(self, endpoint: str, exc: httpx.TransportError) -> str:
        untrusted = _certificate_error(exc)
        if untrusted is not None:
            by = f"by {self.ca_file}" if self.ca_file else "by this system's CAs"
            return (f"its TLS certificate is not trusted {by} ({untrusted.verify_message}); pass --ca-file with "
                    "the certificate of the CA that signed it (the frontend's <data_dir>/tls/api.crt for the one it "
                    "generates), to 'clctl login' to keep using it, or set CLOUDLAND_CA_FILE")
        if isinstance(exc, httpx.ConnectTimeout):
            return "timed out connecting"
        why = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.RemoteProtocolError) and endpoint.startswith("http://"):
            # What a TLS-only server does to a plain HTTP request: close the connection unanswered.
            return f"{why} (if the API serves TLS, as it does by default, use https://)"
        return why


def _unreachable(missed: list[tuple[str, str]], note: str | None) -> ClctlError:
    if len(missed) == 1:
        endpoint, why = missed[0]
        message = f"cannot reach the API at {endpoint}: {why}"
    else:
        tried = "; ".join(f"{endpoint}: {why}" for endpoint, why in missed)
        message = f"cannot reach the API at any of its {len(missed)} endpoints ({tried})"
    return ClctlError(f"{message}.\n{note}" if note else message, EXIT_UNREACHABLE)


def _error_code(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


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
