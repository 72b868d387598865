"""The live serial console in the browser: a page with a small terminal script, and its WebSocket.

The socket is the API's own live console (``frontend/api/routes/liveconsole.py``), served with
the token of the session's cookie: the same checks, the same hub, the same audit row. A
WebSocket's handshake is not bound by the same-origin policy and carries the cookie, so one
from a page of another origin (cross-site WebSocket hijacking) is refused before anything else.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import FastAPI, WebSocket
from fastapi.responses import Response

from ..api.routes.liveconsole import refuse, serve
from ..api.schemas import Ref
from ..errors import Forbidden
from ._session import TOKEN_COOKIE
from ._web import VisitDep, render

__all__ = ["live_console_pages"]

#: the page may run the console's own script and open its socket back here, and nothing else
_LIVE_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; "
             "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def live_console_pages(console: FastAPI) -> None:
    @console.get("/instances/{instance}/console/live")
    async def live_console_page(instance: Ref, visit: VisitDep) -> Response:
        row = await visit.api.get(f"/v1/instances/{instance}")
        response = render("liveconsole.html", visit, instance=row)
        response.headers["Content-Security-Policy"] = _LIVE_CSP
        return response

    @console.websocket("/instances/{instance}/console/live/socket")
    async def live_console_socket(websocket: WebSocket, instance: str, mode: str = "write") -> None:
        if urlsplit(websocket.headers.get("origin", "")).netloc != websocket.headers.get("host"):
            await refuse(websocket, Forbidden("a live console opens only from the console's own pages"))
            return
        token = websocket.cookies.get(TOKEN_COOKIE)
        await serve(websocket, websocket.app.state.api.state.frontend, f"Bearer {token}" if token else None,
                    instance, mode)
