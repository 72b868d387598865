"""The ``Idempotency-Key`` header: a change sent again after its answer was lost is done once.

A client sends a key of its own (a UUID, say) with a POST, PUT, PATCH or DELETE, and the same
key when it sends the same call again, to the same frontend or another (``clctl`` does when
its frontend breaks off mid-call).  The first call runs; its key is claimed in the
transaction of its first change (``frontend/idempotency.py``).  Then a call with that key:

* after the first answered, gets the first's answer back (its status and body), with
  ``Idempotent-Replayed: true``, and does nothing;
* while the first has changed something and not answered (still running, or its frontend
  died between its change and its answer), is refused: 409, field ``Idempotency-Key``;
* for another method or path, is refused: 422, field ``Idempotency-Key``.

A call that changed nothing (refused, or killed before its change committed) leaves no trace
and runs again for real.  Keys are scoped by the caller's token and kept a day.  Calls without
a token (logging in) ignore the header, and so do the calls whose answer is a secret (a new
token, an enrolment token): the database keeps no secret in the clear, so there would be no
answer to give again.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..db import Database
from ..errors import ApiError, Invalid
from ..idempotency import Claim, KeyInUse, answered, claiming, recorded

__all__ = ["HEADER", "REPLAYED", "Idempotency"]

HEADER = "Idempotency-Key"
#: set on an answer given again from a key's record
REPLAYED = "Idempotent-Replayed"
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: answers bigger than this are not kept: a repeat gets the status with an empty body
MAX_KEPT_BODY = 1 << 20
_KEY = re.compile(r"[\x21-\x7e]{1,255}\Z")
_INTERNAL = (b'{"error": {"code": "internal", "message": "internal error; the frontend\'s log has the details", '
             b'"field": null, "reason": "internal error; the frontend\'s log has the details"}}')


class Idempotency:
    """ASGI middleware: answer a change sent again with its key from the first one's record."""

    def __init__(self, app: ASGIApp, db: Database, secret_answers: Iterable[tuple[str, str]] = ()) -> None:
        self.app = app
        self.db = db
        #: (method, path) of the calls whose answer is a secret
        self.secret_answers = frozenset(secret_answers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        key = headers.get(HEADER) if headers is not None and scope["method"] in CHANGES else None
        token = headers.get("authorization") if headers is not None else None
        if key is None or not token or (scope["method"], scope["path"]) in self.secret_answers:
            await self.app(scope, receive, send)
            return
        if not _KEY.match(key):
            await _refuse(Invalid("must be 1 to 255 printable ASCII characters, without spaces", HEADER),
                          scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        claim = Claim(hashlib.sha256(token.encode()).hexdigest(), key, method, path)
        record = await run_in_threadpool(recorded, self.db, claim.scope, key)
        if record is not None:
            if (record.method, record.path) != (method, path):
                await _refuse(Invalid(f"already used for {record.method} {record.path}: a key names one call",
                                      HEADER), scope, receive, send)
            elif record.status is None:
                await _refuse(KeyInUse(), scope, receive, send)
            else:
                replay = Response(record.body or b"", status_code=record.status, headers={REPLAYED: "true"},
                                  media_type="application/json" if record.body else None)
                await replay(scope, receive, send)
            return

        status = 500
        body: list[bytes] = []
        size = 0

        async def keep(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and size <= MAX_KEPT_BODY:
                chunk = message.get("body", b"")
                size += len(chunk)
                body.append(chunk)
            await send(message)

        with claiming(claim):
            try:
                await self.app(scope, receive, keep)
            except Exception:
                if claim.committed:  # changed, then crashed: a repeat is told so, not run again
                    await run_in_threadpool(answered, self.db, claim, 500, _INTERNAL)
                raise
        if claim.committed:
            kept = b"".join(body) if size <= MAX_KEPT_BODY else b""
            await run_in_threadpool(answered, self.db, claim, status, kept or None)


async def _refuse(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(error.body(), status_code=error.http_status)(scope, receive, send)
