"""Images: registered first (queued), then their file uploaded (active), then booted from.

Anyone may use their organization's images and the public ones; only admins publish.  The
file lives in the frontend's image store, where hypervisors fetch it from.  An image made from
an instance (``POST /v1/instances/{instance}/image``) is uploaded by the instance's hypervisor
over a signed upload link instead of by a user, and checked and stored the same way.
"""

from __future__ import annotations

from typing import Iterator, Literal

import anyio.from_thread
from fastapi import APIRouter, Query, Request, status
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect
from pydantic import Field
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from ...auth import Caller, Role, authenticate
from ...db.engine import changed
from ...db.models import Image, Instance, utcnow
from ...errors import Conflict, Forbidden, Invalid, NotFound, TooLarge, Unauthenticated
from ...imagelinks import UPLOAD
from ...images import MAX_IMAGE_BYTES, ImageStore, Refused
from ...images import TooLarge as FileTooLarge
from ...services import Frontend
from ..allorgs import AllOrgsDep
from ..deps import CallerDep, FrontendDep, TokenOrLinkDep, refuse_on_standby
from ..lookup import find, get_owned, owned, unique_name
from ..refusals import refusals
from ..schemas import V1, Input, Items, MemoryMb, Name, Ref, ResourceView, Sha256

router = APIRouter(prefix=V1, tags=["images"])

_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
#: the upload streams its body to disk under the store's own limit, so the API's body cap lets it through
UPLOAD_PATH = "/images/{image}/file"
STREAMED_UPLOAD = ("PUT", V1 + UPLOAD_PATH)


class ImageCreate(Input):
    name: Name
    format: Literal["qcow2", "raw"]
    checksum: Sha256 | None = Field(default=None, description="sha256 of the file; the upload is refused if it differs")
    min_memory_mb: MemoryMb | None = Field(default=None, description="The least memory it boots with: launches "
                                                                      "with a flavor of less are refused")
    public: bool = Field(default=False, description="Visible to every organization (admins only)")
    kernel: Ref | None = Field(default=None, description="A raw image (id or name) to boot directly as the kernel")
    initrd: Ref | None = Field(default=None, description="A raw image (id or name) to use as the initrd; needs kernel")


class ImageUpdate(Input):
    name: Name | None = None
    public: bool | None = Field(default=None, description="Admins only")


class ImageView(ResourceView):
    name: str
    format: str
    checksum: str | None
    size_bytes: int | None
    virtual_size_bytes: int | None = Field(description="The size of the disk it is, read from the file at upload: "
                                                       "a qcow2 header's virtual size, or a raw file's length")
    min_disk_gb: int | None = Field(description="The smallest flavor disk_gb it fits: virtual_size_bytes in GiB, "
                                                "rounded up; null until uploaded")
    min_memory_mb: int | None
    public: bool
    kernel_id: str | None
    initrd_id: str | None
    source_instance_id: str | None = Field(description="The instance it was made from (POST "
                                                       "/v1/instances/{instance}/image); null if uploaded")


def _store(frontend: Frontend) -> ImageStore:
    return ImageStore(frontend.images_dir)


def _boot_file(session: Session, caller: Caller, ref: str, field: str) -> str:
    found = find(session, Image, ref, caller, "image", field, shared=True)
    # Locked so that its deletion, which checks for referring images, waits for this registration.
    row = get_owned(session, Image, found.id, caller, "image", field, shared=True, lock=True)
    if row.format != "raw":
        raise Invalid(f"image {ref!r} is {row.format}; a kernel or initrd must be a raw image", field)
    return row.id


def _request_chunks(request: Request) -> Iterator[bytes]:
    """The request body as it arrives, for a synchronous endpoint running in a worker thread."""
    stream = request.stream().__aiter__()

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    while (chunk := anyio.from_thread.run(next_chunk)) is not None:
        yield chunk


def _requeue(frontend: Frontend, image_id: str) -> None:
    with frontend.db.transaction() as session:
        session.execute(update(Image).where(Image.id == image_id, Image.status == "saving")
                        .values(status="queued", updated_at=utcnow()))


@router.post("/images", status_code=status.HTTP_201_CREATED, response_model=ImageView,
             summary="Register an image; upload its file next")
def create_image(body: ImageCreate, caller: CallerDep, frontend: FrontendDep) -> Image:
    caller.require(Role.member, "registering an image")
    if body.public and not caller.is_admin:
        raise Forbidden("only admins may publish images", "public")
    if body.initrd is not None and body.kernel is None:
        raise Invalid("an initrd needs a kernel", "initrd")
    with frontend.db.transaction() as session:
        unique_name(session, Image, body.name, "image", org_id=caller.org_id)
        image = Image(org_id=caller.org_id, status="queued", name=body.name, format=body.format,
                      checksum=body.checksum, min_memory_mb=body.min_memory_mb, public=body.public)
        if body.kernel is not None:
            image.kernel_id = _boot_file(session, caller, body.kernel, "kernel")
        if body.initrd is not None:
            image.initrd_id = _boot_file(session, caller, body.initrd, "initrd")
        session.add(image)
        session.flush()
        return image


@router.get("/images", response_model=Items[ImageView], summary="List your organization's images and public ones")
def list_images(caller: CallerDep, frontend: FrontendDep, all_orgs: AllOrgsDep) -> Items[ImageView]:
    with frontend.db.read() as session:
        query = owned(Image, caller, shared=True, all_orgs=all_orgs).order_by(Image.name, Image.id)
        rows = session.execute(query).scalars()
        return Items(items=[ImageView.model_validate(i) for i in rows])


@router.get("/images/{image}", response_model=ImageView, summary="Show an image by id or name",
            responses=refusals(409))
def show_image(image: Ref, caller: CallerDep, frontend: FrontendDep) -> Image:
    with frontend.db.read() as session:
        return find(session, Image, image, caller, "image", shared=True)


@router.patch("/images/{image}", response_model=ImageView, summary="Rename an image, or publish it (admins)")
def update_image(image: Ref, body: ImageUpdate, caller: CallerDep, frontend: FrontendDep) -> Image:
    caller.require(Role.member, "changing an image")
    if body.public is not None and not caller.is_admin:
        raise Forbidden("only admins may publish or unpublish images", "public")
    with frontend.db.transaction() as session:
        row = find(session, Image, image, caller, "image")
        if body.name is not None and body.name != row.name:
            unique_name(session, Image, body.name, "image", org_id=caller.org_id)
            row.name = body.name
        if body.public is not None:
            row.public = body.public
        session.flush()
        return row


@router.delete("/images/{image}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an image no instance or other image uses, and its file")
def delete_image(image: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "deleting an image")
    with frontend.db.transaction() as session:
        row = get_owned(session, Image, find(session, Image, image, caller, "image").id, caller, "image", lock=True)
        used = session.execute(select(func.count()).where(Instance.image_id == row.id)).scalar()
        if used:
            raise Conflict(f"{used} instances use this image")
        # Any organization's image may boot a public kernel, so this looks beyond the caller's.
        referrers = session.execute(select(func.count()).select_from(Image)
                                    .where(or_(Image.kernel_id == row.id, Image.initrd_id == row.id))).scalar()
        if referrers:
            raise Conflict(f"{referrers} images use this one as their kernel or initrd")
        image_id = row.id
        session.delete(row)
    # Only once the row is gone for good: a failed commit must not leave an active image without its file.
    _store(frontend).remove(image_id)


@router.put(UPLOAD_PATH, response_model=ImageView,
            summary="Upload the file of a queued image (with a token, or a hypervisor's signed upload link)",
            description=f"The request body is the file itself, at most {MAX_IMAGE_BYTES} bytes. A qcow2 image must "
                        "start with a qcow2 header (version 2 or 3, no backing file), whose virtual size becomes "
                        "the image's; a raw image's virtual size is its length. With a declared checksum, the "
                        "file must match it. A refused file is not kept and the image stays queued. An image "
                        "made from an instance takes its file from the instance's hypervisor only, over a signed "
                        "upload link (a download link does not authorize an upload).",
            openapi_extra={"requestBody": {"required": True, "content": _BINARY}}, responses=refusals(401, 503))
def upload_image(image: Ref, request: Request, caller: TokenOrLinkDep, frontend: FrontendDep,
                 expires: int | None = None,
                 signature: str | None = Query(default=None, pattern="^[0-9a-f]{64}$")) -> Image:
    # A new leader discards the uploads it finds half-done (``bootstrap.recover``): one going
    # to a standby at that moment would be cut.
    refuse_on_standby(frontend, "receiving an image upload")
    store = _store(frontend)
    with frontend.db.transaction() as session:
        if caller is None and signature is not None and expires is not None:
            # A hypervisor sending an image made from an instance: the signature is the authority.
            row = session.get(Image, image)
            if (row is None or row.source_instance_id is None
                    or not frontend.image_links.valid(row.id, expires, signature, UPLOAD)):
                raise Unauthenticated("the upload link is not valid or has expired")
        else:
            if caller is None:
                caller = authenticate(session, None)
            caller.require(Role.member, "uploading an image")
            row = find(session, Image, image, caller, "image")
            if row.source_instance_id is not None:
                raise Conflict(f"image {row.name!r} is made from instance {row.source_instance_id}; its file comes "
                               "from the instance's hypervisor, not from an upload")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > store.max_bytes:
            raise TooLarge(f"the file is larger than the limit of {store.max_bytes} bytes")
        # Conditional, so that of two concurrent uploads only one may write the file.
        claimed = changed(session, update(Image).where(Image.id == row.id, Image.status == "queued")
                          .values(status="saving", updated_at=utcnow()))
        if not claimed:
            raise Conflict(f"the image is {row.status}; only a queued image takes a file")
        image_id, expected, fmt = row.id, row.checksum, row.format
    try:
        received = store.receive(image_id, _request_chunks(request), expected, fmt)
    except BaseException as exc:
        _requeue(frontend, image_id)
        if isinstance(exc, ClientDisconnect):
            # The uploader's doing, not the frontend's fault: no crash report, and nothing kept.
            raise Invalid("the upload ended before the whole file was sent", None) from None
        if isinstance(exc, FileTooLarge):
            raise TooLarge(exc.reason, exc.field) from None
        if isinstance(exc, Refused):
            raise Invalid(exc.reason, exc.field) from None
        raise
    with frontend.db.transaction() as session:
        done: Image | None = session.execute(select(Image).where(Image.id == image_id).with_for_update()).scalar()
        if done is None:
            # Deleted while the file was arriving: the file must not outlive it.
            store.remove(image_id)
            raise NotFound("image", image)
        done.status, done.checksum, done.size_bytes = "active", received.checksum, received.size_bytes
        done.virtual_size_bytes = received.virtual_size_bytes
        session.flush()
        return done


@router.get("/images/{image}/file", response_class=FileResponse,
            summary="Download the file of an active image (with a token, or a hypervisor's signed link)",
            responses={200: {"content": _BINARY}, **refusals(401, 409)})
def download_image(image: Ref, request: Request, frontend: FrontendDep, expires: int | None = None,
                   signature: str | None = Query(default=None, pattern="^[0-9a-f]{64}$")) -> FileResponse:
    with frontend.db.read() as session:
        if signature is not None and expires is not None:
            # A hypervisor's link from a launch spec: the signature is the authority (frontend/imagelinks.py).
            row = session.get(Image, image)
            if row is None or not frontend.image_links.valid(row.id, expires, signature):
                raise Unauthenticated("the download link is not valid or has expired")
        else:
            caller = authenticate(session, request.headers.get("Authorization"))
            row = find(session, Image, image, caller, "image", shared=True)
        if row.status != "active":
            raise Conflict(f"the image is {row.status}; it has no file yet")
        path, filename = _store(frontend).path(row.id), f"{row.name}.{row.format}"
    return FileResponse(path, media_type="application/octet-stream", filename=filename)
