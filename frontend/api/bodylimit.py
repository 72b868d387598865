"""The cap on request bodies: a body over it answers 413 before any route runs.

A declared Content-Length over the cap is refused without reading a byte.  A body without one
(chunked) is read here, up to the cap, before the app sees it: refused as soon as it passes the
cap, handed on whole otherwise.  Routes parse their bodies in memory anyway, so this holds no
more than they would.  Starlette's own limit is not used: on a route that does not read its
body it answers 413 only after the route has run.

Image uploads stream to disk under the image store's own, larger limit and are let through.
"""

from __future__ import annotations

import json
from typing import Iterable

import structlog
from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import TooLarge

__all__ = ["BodyLimit"]

log = structlog.get_logger("frontend.api")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes``, except on ``streamed`` routes."""

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: Iterable[tuple[str, str]]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: (method, regex of the path) of the routes that read their bodies as streams
        self._streamed = [(method, compile_path(path)[0]) for method, path in streamed]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_streamed(scope):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left; let the app see it
                await self.app(scope, _replay(message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay(whole, receive), send)

    def _is_streamed(self, scope: Scope) -> bool:
        return any(scope["method"] == method and regex.match(scope["path"]) for method, regex in self._streamed)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = TooLarge(f"the request body is larger than the limit of {self.max_bytes} bytes")
        log.info("api_refused", method=scope["method"], path=scope["path"], code=error.code, reason=error.reason)
        body = json.dumps(error.body()).encode()
        # The unread rest of the body makes the connection unusable for another request.
        await send({"type": "http.response.start", "status": error.http_status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(message: Message, receive: Receive) -> Receive:
    """A ``receive`` that gives ``message`` (what was read here) first, then hands over to the real one."""
    first = [message]

    async def replayed() -> Message:
        return first.pop() if first else await receive()

    return replayed

