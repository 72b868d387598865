"""The console's cookies and its CSRF tokens.

The API token lives in a cookie the page's scripts cannot read (HttpOnly) and that the browser
sends only with requests made from the console's own pages (SameSite=Strict), over TLS only
when the API serves TLS (Secure).  Every form also carries a CSRF token: for a logged-in user,
an HMAC of the API token, so it needs no server-side state, holds on every frontend of the
cloud, and dies with the token; for the login form, which has no token yet, a random value
also set in a cookie (double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["CSRF_FIELD", "LOGIN_COOKIE", "PATH", "TOKEN_COOKIE", "clear", "csrf_for", "csrf_ok", "new_login_csrf",
           "set_cookie"]

#: every page of the console is under it, and its cookies are sent nowhere else
PATH = "/ui"
TOKEN_COOKIE = "cloudland_token"
LOGIN_COOKIE = "cloudland_login_csrf"
#: the hidden form field that carries the CSRF token
CSRF_FIELD = "csrf"
# Keys the HMAC apart from any other use of the token (the database keeps its plain SHA-256).
_PURPOSE = b"cloudland console csrf v1"


def csrf_for(token: str) -> str:
    """The CSRF token of forms shown to the holder of API token ``token``."""
    digest = hmac.new(token.encode(), _PURPOSE, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    # Secure follows the scheme the request came in by: a browser never sends a Secure cookie over
    # plain HTTP, which the API serves only when its operator turned TLS off (loopback development).
    response.set_cookie(name, value, max_age=max_age, path=PATH, secure=request.url.scheme == "https",
                        httponly=True, samesite="strict")


def clear(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path=PATH, secure=request.url.scheme == "https", httponly=True,
                           samesite="strict")
