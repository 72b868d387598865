"""The console's way to the REST API: the very same app, called in-process over ASGI.

Every page reads and changes things through ``/v1`` as the logged-in user, with the user's own
token, so the API's rules (organization scoping, roles, quotas, validation, rate limits and the
audit log) hold in the console because they are the same code, not a copy of it.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import httpx
from starlette.types import ASGIApp

__all__ = ["Api", "Refusal"]

#: never resolved: requests to it go to the app in this process
_BASE = "http://cloudland.internal"


class Refusal(Exception):
    """An error answer of the API, as its body gives it."""

    def __init__(self, status: int, code: str, reason: str, field: str | None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.field = field

    @classmethod
    def of(cls, response: httpx.Response) -> "Refusal":
        try:
            error = response.json()["error"]
            return cls(response.status_code, str(error["code"]), str(error["reason"]), error.get("field"))
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "http_error", f"the API answered {response.status_code}", None)


class Api:
    """Calls of one console request, made with ``token`` (if any) from the browser's address."""

    def __init__(self, app: ASGIApp, client: tuple[str, int] | None, token: str | None) -> None:
        # The browser's address, not this process's, is what the API rate-limits and audits logins by.
        transport = httpx.ASGITransport(app=app, client=client or ("127.0.0.1", 0), raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(transport=transport, base_url=_BASE, headers=headers, timeout=60)

    async def __aenter__(self) -> "Api":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None,
                   content: AsyncIterator[bytes] | None = None) -> Any:
        """The answer's JSON body (None if empty); ``Refusal`` for an error answer."""
        response = await self._http.request(method, path, json=json, params=params, content=content)
        if response.status_code >= 400:
            raise Refusal.of(response)
        return response.json() if response.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params=params or None)

    async def post(self, path: str, json: Any = None) -> Any:
        return await self.call("POST", path, json=json)

    async def patch(self, path: str, json: Any) -> Any:
        return await self.call("PATCH", path, json=json)

    async def put_stream(self, path: str, chunks: AsyncIterator[bytes]) -> Any:
        """PUT a body of unknown length, sent as ``chunks`` come (an image's file)."""
        return await self.call("PUT", path, content=chunks)

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)
