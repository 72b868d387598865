"""``/docs``: Swagger UI over the API's OpenAPI description, every file of it served by the frontend.

FastAPI's default page loads Swagger UI from a CDN, so it is blank where the frontend has no way
out (most clouds' management networks).  Its files come from the ``swagger-ui-py`` package
(Swagger UI 5, which reads OpenAPI 3.1; Apache-2.0, the licence in ``swagger_ui/static/LICENSE``),
served under ``/docs/assets``.

The page has the web console's headers (``frontend/console``): a policy that lets it load
nothing but this frontend's files, no framing, no referrer, no sniffing.  Its one inline script,
which starts Swagger UI, is allowed by its hash, so no other inline script runs.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

__all__ = ["ASSETS", "PATH", "mount_docs"]

PATH = "/docs"
ASSETS = PATH + "/assets"
#: what every answer under /docs carries, as the console's do
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
#: data: images are the icons Swagger UI's stylesheet inlines; connect-src is its fetch of the description
_CSP = ("default-src 'none'; script-src 'self' {script}; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
#: Swagger UI would send the description to validator.swagger.io for a badge: null keeps it home
_PARAMETERS = {"validatorUrl": None}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


def _page(app: FastAPI) -> tuple[str, dict[str, str]]:
    """The page's HTML and headers: the same for every request."""
    assert app.openapi_url is not None
    html = bytes(get_swagger_ui_html(
        openapi_url=app.openapi_url, title=f"{app.title} API", swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css", swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        swagger_ui_parameters=_PARAMETERS).body).decode()
    found = _INLINE_SCRIPT.search(html)
    assert found is not None, "FastAPI's Swagger UI page no longer starts it with an inline script"
    digest = base64.b64encode(hashlib.sha256(found[1].encode()).digest()).decode()
    # no-store: the page names the assets' paths, which change with the package; never a stale one
    return html, {**_HEADERS, "Content-Security-Policy": _CSP.format(script=f"'sha256-{digest}'"),
                  "Cache-Control": "no-store"}


def mount_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` on ``app``, made with ``docs_url=None``."""
    html, headers = _page(app)

    @app.get(PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)

    app.mount(ASSETS, _Assets(packages=[("swagger_ui", "static")]), name="swagger-ui")
