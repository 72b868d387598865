"""Images: the list, deletion, and an upload that registers the image and streams its file into the API.

The upload is one plain HTML form (its CSRF token, the image's name and format, then the file),
so it works without JavaScript; ``static/upload.js``, the console's only script, sends the same
form with ``XMLHttpRequest`` to show its progress. The console registers the image
(``POST /v1/images``) and passes the file on to ``PUT /v1/images/{id}/file`` as it arrives, so
the API checks the file and enforces its limit exactly as for ``clctl``; an upload that fails
leaves no image behind.
"""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from ..api.schemas import Ref
from ._api import Refusal
from ._multipart import FormError, StreamedForm
from ._session import CSRF_FIELD, PATH, csrf_ok
from ._web import CsrfRefused, FormDep, Visit, VisitDep, log, render, to

__all__ = ["UPLOAD", "image_pages"]

#: the form's route, whose body the API's body limit lets through, as it does the API's own upload
UPLOAD = ("POST", PATH + "/images")
#: the upload page may run the console's own script and have it post back here, and nothing else
_UPLOAD_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; "
               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def image_pages(console: FastAPI) -> None:
    @console.get("/images")
    async def images(visit: VisitDep) -> Response:
        response = render("images.html", visit, images=(await visit.api.get("/v1/images"))["items"])
        response.headers["Content-Security-Policy"] = _UPLOAD_CSP
        return response

    @console.post("/images")
    async def upload(request: Request, visit: VisitDep) -> Response:
        form = await _read_fields(request, visit)
        body: dict[str, object] = {"name": _field(form, "name") or "", "format": _field(form, "format") or ""}
        if memory := _field(form, "min_memory_mb"):
            body["min_memory_mb"] = memory
        image = await visit.api.post("/v1/images", body)
        cut: list[FormError] = []

        async def file() -> AsyncIterator[bytes]:
            try:
                async for chunk in form.file():
                    yield chunk
            except FormError as exc:
                cut.append(exc)  # the user is told why; the API sees its client cut the file short
                raise ClientDisconnect() from exc

        try:
            await visit.api.put_stream(f"/v1/images/{image['id']}/file", file())
        except Exception:
            # The user asked for an image with its file: without the file, no image.
            await visit.api.delete(f"/v1/images/{image['id']}")
            if cut:
                raise Refusal(400, "invalid", cut[0].reason, cut[0].field) from None
            raise
        log.info("console_image_uploaded", image=image["id"], user=visit.user["user_name"])
        return to("/images")

    @console.post("/images/{image}/delete")
    async def delete(image: Ref, visit: VisitDep, form: FormDep) -> Response:
        await visit.api.delete(f"/v1/images/{image}")
        return to("/images")


async def _read_fields(request: Request, visit: Visit) -> StreamedForm:
    """The upload's form up to its file, once its CSRF token is this session's."""
    form: StreamedForm | None = None
    try:
        form = StreamedForm(request.headers.get("content-type", ""), request.stream().__aiter__(), "file")
        await form.read_fields()
    except FormError as exc:
        # Without this session's token the form may not be the user's: it is told no more than that.
        if form is not None and csrf_ok(visit.csrf, form.fields.get(CSRF_FIELD)):
            raise Refusal(400, "invalid", exc.reason, exc.field) from None
    if form is None or not csrf_ok(visit.csrf, form.fields.get(CSRF_FIELD)):
        log.warning("console_csrf_refused", path=request.url.path, user=visit.user["user_name"])
        raise CsrfRefused()
    return form


def _field(form: StreamedForm, name: str) -> str | None:
    return (form.fields.get(name) or "").strip() or None
