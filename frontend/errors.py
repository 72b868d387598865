"""Errors the API returns, one class per machine-readable code.

::

    ApiError (code, HTTP status, field, reason)
    ├── Invalid          422 invalid         a field's value is wrong
    ├── Unauthenticated  401 unauthenticated no token, a bad one, or an expired one
    ├── Forbidden        403 forbidden       the caller's role does not allow it
    ├── NotFound         404 not_found       no such resource in the caller's organization
    ├── Conflict         409 conflict        the state of things forbids it (in use, duplicate name)
    ├── QuotaExceeded    409 quota_exceeded  the organization's quota is spent
    ├── TooLarge         413 too_large       a request body or an upload is over the limit
    ├── TooManyRequests  429 rate_limited    over a rate limit; Retry-After says when to try again
    └── Unavailable      503 unavailable     a part the request needs is not running
        └── NotLeading   503 not_leading     a standby frontend: the leader does this (try another)

Every error reaches the client as ``{"error": {"code", "message", "field", "reason"}}``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "Conflict", "Forbidden", "Invalid", "NotFound", "QuotaExceeded", "TooLarge", "TooManyRequests",
           "NotLeading", "Unauthenticated", "Unavailable"]


class ApiError(Exception):
    code = "error"
    http_status = 500

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self), "field": self.field, "reason": self.reason}}

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the body."""
        return {}


class Invalid(ApiError):
    code, http_status = "invalid", 422


class Unauthenticated(ApiError):
    code, http_status = "unauthenticated", 401


class Forbidden(ApiError):
    code, http_status = "forbidden", 403


class NotFound(ApiError):
    code, http_status = "not_found", 404

    def __init__(self, kind: str, ident: str, field: str | None = None) -> None:
        super().__init__(f"no {kind} {ident!r}", field)


class Conflict(ApiError):
    code, http_status = "conflict", 409


class QuotaExceeded(ApiError):
    code, http_status = "quota_exceeded", 409


class TooLarge(ApiError):
    code, http_status = "too_large", 413


class TooManyRequests(ApiError):
    code, http_status = "rate_limited", 429

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unavailable(ApiError):
    code, http_status = "unavailable", 503


class NotLeading(Unavailable):
    """The call acts through the tree's root, which only the leading frontend runs: clients
    that know several frontends try the next one."""

    code = "not_leading"

    def __init__(self, doing: str) -> None:
        super().__init__(f"this frontend is a standby: {doing} is done by the leading frontend; ask another")
