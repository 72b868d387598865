"""``image``: disk images instances boot from; registered first, then their file uploaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import click
import httpx

from ..client import Api, url
from ..output import Column, ProgressLine, size, when
from ..resource import ALL_ORGS, Resource
from ..session import api, json_option, wait_option

__all__ = ["group"]

IMAGE = Resource("image", "images", (
    Column("ID", "id"), Column("NAME", "name"), Column("STATUS", "status"), Column("FORMAT", "format"),
    Column("SIZE", "size_bytes", size, right=True), Column("PUBLIC", "public"), Column("CREATED", "created_at", when),
))

#: a slow link may take long to send a chunk, and the API checks the whole file before it answers
UPLOAD_TIMEOUT = httpx.Timeout(60.0, connect=5.0, read=600.0)
CHUNK = 1 << 20


@click.group("image")
def group() -> None:
    """Images: qcow2 or raw disks; public ones are seen by every organization."""


def _chunks(path: Path, total: int) -> Iterator[bytes]:
    progress = ProgressLine()
    sent = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk
            sent += len(chunk)
            # A line per MiB would flood a log; the live line is for people at a terminal.
            if progress.tty:
                progress.show(f"uploading {path.name}: {sent * 100 // max(total, 1)}% of {size(total)}")
    progress.end()


def _upload(client: Api, ref: str, path: Path) -> Any:
    """Stream the file to ``PUT /v1/images/{ref}/file``, never holding it in memory."""
    total = os.path.getsize(path)
    return client.request("PUT", url("images", ref, "file"), content=lambda: _chunks(path, total),
                          headers={"Content-Type": "application/octet-stream", "Content-Length": str(total)})


@group.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["qcow2", "raw"]), required=True)
@click.option("--checksum", metavar="SHA256", help="The file's sha256; the upload is refused if it differs.")
@click.option("--public/--private", default=False, show_default=True,
              help="Every organization may use it (only admins publish), or only yours.")
@click.option("--min-memory-mb", type=click.IntRange(min=1),
              help="The least memory it boots with; launches with a flavor of less are refused.")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Upload this file right after registering the image.")
@wait_option
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, fmt: str, checksum: str | None, public: bool, min_memory_mb: int | None,
           file: Path | None, wait: bool) -> None:
    """Register an image, and with --file upload it too.

    The smallest flavor disk it fits is read from the file at upload (a qcow2 image's virtual
    size, a raw image's length).
    """
    client = api(ctx, UPLOAD_TIMEOUT)
    body: dict[str, Any] = {"name": name, "format": fmt, "public": public}
    if checksum is not None:
        body["checksum"] = checksum
    if min_memory_mb is not None:
        body["min_memory_mb"] = min_memory_mb
    answer = client.post(IMAGE.path(), body)
    if file is not None:
        image = answer.get("resource") if isinstance(answer.get("task"), dict) else answer
        answer = _upload(client, str(image["id"]), file)
    IMAGE.finish(ctx, client, answer, wait)


@group.command()
@IMAGE.argument()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@wait_option
@json_option
@click.pass_context
def upload(ctx: click.Context, ref: str, path: Path, wait: bool) -> None:
    """Upload the file of a registered image."""
    client = api(ctx, UPLOAD_TIMEOUT)
    IMAGE.finish(ctx, client, _upload(client, ref, path), wait)


IMAGE.add_common(group, ALL_ORGS)
