"""``/v1/instances/{instance}/console/live``: an instance's serial console, live, over a WebSocket.

The hub (``frontend/liveconsole.py``) holds one session per instance on its host; this module
is the clients' side of it. The protocol is the endpoint's docstring (``docs/api.md``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ...auth import Caller, authenticate
from ...db.models import Hypervisor, Instance
from ...errors import ApiError, Conflict, Invalid
from ...liveconsole import Attachment, ConsoleHub, Ended, Seat
from ...services import Frontend
from ..deps import refuse_on_standby
from ..lookup import find
from ..schemas import V1

__all__ = ["PATH", "refuse", "router", "serve"]

log = structlog.get_logger("frontend.api")

router = APIRouter(prefix=V1, tags=["instances"])

PATH = "/instances/{instance}/console/live"
MODES = ("write", "watch")
_IDLE = 4408


@router.websocket(PATH)
async def live_console(websocket: WebSocket, instance: str, mode: str = "write") -> None:
    """An active instance's serial console, live: type into the guest and see what it prints.

    Auth: bearer token (`Authorization: Bearer <token>`), on an instance of the caller's
    organization (admins: any). Query: `mode`, `write` (the default: type if nobody else
    does, else watch until they leave) or `watch` (never type). A refusal is an HTTP answer in
    the API's error shape before the connection becomes a WebSocket: `401`, `404`, `409` (the
    instance is not active, or its host could not open the console), `422` (a bad `mode`),
    `429`, `503` (a standby frontend, `not_leading`: ask the leader; or the host did not answer).

    Once connected:

    - binary frames from the client are what it types (text frames too, as UTF-8); binary
      frames to it are what the guest prints, as it prints it;
    - text frames to the client are JSON events: `{"event": "seat", "writer": bool,
      "message"}` when its role is given or changes (one client types at a time, the others
      watch), and `{"event": "closed", "reason"}` just before the server closes;
    - close codes: `1000` the client left; `1012` the frontend stopped leading (attach again, to
      the new leader); `4408` idle: no byte either way for `api.console_idle_timeout_s`
      (default 900 s); `4410` the console ended (the guest stopped, the host's backend
      stopped); `4429` the client did not keep up with the output.

    Opening one is recorded in the audit log, method `WS`.
    """
    await serve(websocket, websocket.app.state.frontend, websocket.headers.get("authorization"), instance, mode)


async def serve(websocket: WebSocket, frontend: Frontend, authorization: str | None, instance: str, mode: str) -> None:
    """The live console of ``instance`` for the caller ``authorization`` names (``Bearer <token>``):
    refused as an HTTP answer, or served until either side ends it."""
    try:
        caller, instance_id, host = await run_in_threadpool(_admit, frontend, websocket, authorization, instance,
                                                            mode)
        attachment = await run_in_threadpool(frontend.consoles.attach, instance_id, host, caller.user_name,
                                             mode == "write", asyncio.get_running_loop())
    except ApiError as exc:
        await refuse(websocket, exc)
        return
    try:
        await websocket.accept()
        await _serve(websocket, frontend.consoles, attachment, frontend.config.api.console_idle_timeout_s)
    finally:
        await run_in_threadpool(frontend.consoles.detach, attachment)


async def refuse(websocket: WebSocket, exc: ApiError) -> None:
    """Answer the WebSocket's handshake with the API's error, as an HTTP answer."""
    log.info("api_refused", method="WS", path=websocket.url.path, code=exc.code, field=exc.field, reason=exc.reason)
    await websocket.send_denial_response(JSONResponse(exc.body(), status_code=exc.http_status, headers=exc.headers()))


def _admit(frontend: Frontend, websocket: WebSocket, authorization: str | None, ref: str,
           mode: str) -> tuple[Caller, str, str]:
    """The caller, the instance's id and its host; or the ApiError that refuses them."""
    with frontend.db.read() as session:
        caller = authenticate(session, authorization)
        websocket.state.caller = caller
        frontend.rate_limits.admit_call(caller.token_id)
        if mode not in MODES:
            raise Invalid(f"must be one of {', '.join(MODES)}", "mode")
        row = find(session, Instance, ref, caller, "instance")
        host = session.get(Hypervisor, row.hypervisor_id) if row.hypervisor_id else None
        if row.status != "active" or host is None:
            raise Conflict(f"instance {row.name!r} is {row.status}: a live console needs it active", "instance")
        refuse_on_standby(frontend, "a live console")
        return caller, row.id, host.name


async def _serve(websocket: WebSocket, hub: ConsoleHub, attachment: Attachment, idle_timeout_s: float) -> None:
    """Pump both ways until either side ends or the console is idle too long."""
    tasks = [asyncio.create_task(_to_client(websocket, attachment)),
             asyncio.create_task(_from_client(websocket, hub, attachment)),
             asyncio.create_task(_idle(websocket, attachment, idle_timeout_s))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _to_client(websocket: WebSocket, attachment: Attachment) -> None:
    while True:
        item = await attachment.items.get()
        attachment.taken(item)
        if isinstance(item, bytes):
            await websocket.send_bytes(item)
        elif isinstance(item, Seat):
            await _event(websocket, {"event": "seat", "writer": item.writer, "message": item.message})
        elif isinstance(item, Ended):
            await _close(websocket, item.code, item.reason)
            return


async def _from_client(websocket: WebSocket, hub: ConsoleHub, attachment: Attachment) -> None:
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes") or (message.get("text") or "").encode()
        if data:
            # Typed by a watcher: dropped (its seat message told it so).
            hub.type(attachment, data)


async def _idle(websocket: WebSocket, attachment: Attachment, timeout_s: float) -> None:
    while True:
        left = attachment.touched + timeout_s - time.monotonic()
        if left <= 0:
            await _close(websocket, _IDLE, f"idle for {timeout_s:g} s: attach again to go on")
            return
        await asyncio.sleep(left)


async def _event(websocket: WebSocket, event: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(event))


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await _event(websocket, {"event": "closed", "reason": reason})
        # A close frame's reason is at most 123 bytes; the event above carries it whole.
        await websocket.close(code, reason.encode()[:123].decode(errors="ignore"))
    except (RuntimeError, WebSocketDisconnect):  # the client is already gone
        pass
