"""Image tasks: an image made from a stopped instance's disk, on the instance's hypervisor.

The host flattens the instance's root disk into a self-contained qcow2 and sends it over a
signed upload link (``frontend/imagelinks.py``) to the endpoint users upload to, which checks
and stores it as it does theirs (``frontend/images.py``) and makes the image active.  The task
then checks that the file stored is the one the host sent, and the instance is stopped again.

A failed task keeps nothing of the image: its row and any file it got are removed (the task,
and the event log's ``task.failed``, say why), so its name is free for another try.  The one
exception is an image already active and launched from meanwhile: it is whole, and it stays.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import Database
from ..db.models import Hypervisor, Image, Instance, Task
from ..hostalias import mention
from ..hostops import COPY_TIMEOUT, INSTANCE_IMAGE
from ..imagelinks import ImageLinks
from ..images import ImageStore
from ..tasks import TaskContext, TaskFailed, Workflow

__all__ = ["workflows"]

log = structlog.get_logger("frontend.images")

#: the upload link must outlive the longest copy the command waits for
UPLOAD_LINK_TTL_S = COPY_TIMEOUT


class ImageFromInstance:
    def __init__(self, db: Database, links: ImageLinks, store: ImageStore) -> None:
        self.db = db
        self.links = links
        self.store = store

    def run(self, ctx: TaskContext, task: Task) -> None:
        image_id, iid = task.resource_id, task.params["instance_id"]
        host = self._host(iid)
        body = {"instance_id": iid, "image_id": image_id, "url": self.links.upload_url(image_id, UPLOAD_LINK_TTL_S)}
        # Resent after a frontend outage, the recorded link may have expired: a new one goes instead.
        result = ctx.command("image", INSTANCE_IMAGE, body, [host], timeout=COPY_TIMEOUT,
                             refresh=lambda recorded: {**recorded, "url": body["url"]})[host]
        if not result.ok:
            raise TaskFailed(f"{mention(host)}: {result.describe()}")
        sent = result.payload.get("checksum") if isinstance(result.payload, dict) else None
        ctx.once("stored", lambda s: self._stored(s, image_id, iid, sent, task.params["from"]))

    def _host(self, iid: str) -> str:
        with self.db.read() as session:
            instance = session.get(Instance, iid)
            host = session.get(Hypervisor, instance.hypervisor_id) if instance and instance.hypervisor_id else None
            if host is None:
                raise TaskFailed(f"instance {iid} is on no hypervisor")
            return host.name

    @staticmethod
    def _stored(session: Session, image_id: str, iid: str, sent: Any, before: str) -> None:
        image = session.get(Image, image_id)
        if image is None:
            raise TaskFailed("the image was deleted while it was being made")
        if image.status != "active" or image.checksum != sent:
            raise TaskFailed(f"the frontend did not store the file the hypervisor sent (the image is {image.status}, "
                             f"its sha256 {image.checksum}, the hypervisor's {sent})")
        instance = session.get(Instance, iid)
        if instance is not None:
            instance.status, instance.fault = before, None
        log.info("image_made_from_instance", image=image_id, instance=iid, size_bytes=image.size_bytes)

    def failed(self, session: Session, task: Task, reason: str) -> None:
        instance = session.get(Instance, task.params["instance_id"])
        if instance is not None and instance.status == "imaging":
            instance.status, instance.fault = task.params["from"], f"image failed: {reason}"
        image = session.get(Image, task.resource_id)
        if image is None:
            return
        if session.execute(select(func.count()).where(Instance.image_id == image.id)).scalar():
            log.info("image_kept_in_use", image=image.id, instance=task.params["instance_id"])
            return
        session.delete(image)
        session.flush()
        # Before the commit: had the commit failed, the task would fail again and remove the row then.
        self.store.remove(image.id)
        log.info("image_discarded", image=image.id, instance=task.params["instance_id"], reason=reason)


def workflows(db: Database, links: ImageLinks, store: ImageStore) -> dict[str, Workflow]:
    return {"image.create": ImageFromInstance(db, links, store)}
