"""What every start of the frontend does to the state before serving.

On the first start of an empty cloud: the admin organization and its admin user.

The admin password comes from ``CLOUDLAND_ADMIN_PASSWORD`` if set, else it is generated and
written to ``<data_dir>/admin-password`` (mode 0600) for the operator to read once.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path

import structlog
from sqlalchemy import select, update

from .auth import Role, hash_password
from .db import Database
from .db.engine import changed, one_at_a_time
from .db.models import Image, Organization, User
from . import images
from .images import ImageStore

__all__ = ["ADMIN_ORG", "admin_org_id", "bootstrap", "recover"]

log = structlog.get_logger("frontend.bootstrap")

ADMIN_ORG = "admin"


def bootstrap(db: Database, data_dir: Path, password: str | None = None) -> None:
    with db.transaction() as session:
        one_at_a_time(session)
        if session.execute(select(Organization.id).where(Organization.name == ADMIN_ORG)).first() is not None:
            return
        org = Organization(name=ADMIN_ORG, status="active")
        session.add(org)
        session.flush()
        password = password or os.environ.get("CLOUDLAND_ADMIN_PASSWORD")
        if not password:
            password = secrets.token_urlsafe(18)
            path = data_dir / "admin-password"
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            log.info("admin_password_written", path=str(path))
        session.add(User(org_id=org.id, name="admin", role=Role.admin.label, status="active",
                         password_hash=hash_password(password)))
    log.info("admin_created", org=ADMIN_ORG, user="admin")


def recover(db: Database, data_dir: Path) -> None:
    """Undo what a killed frontend left half-done outside tasks: uploads cut off mid-stream.
    Read the virtual sizes of images uploaded before the frontend kept them (migration 0004).

    (Tasks need nothing here: the task engine resumes them.)
    """
    store = ImageStore(data_dir / images.SUBDIR)
    with db.transaction() as session:
        cut = changed(session, update(Image).where(Image.status == "saving").values(status="queued"))
    parts = store.discard_partial()
    if cut or parts:
        log.info("image_uploads_reset", images=cut, partial_files=parts)
    with db.transaction() as session:
        for image in session.execute(select(Image).where(Image.status == "active",
                                                         Image.virtual_size_bytes.is_(None))).scalars():
            try:
                image.virtual_size_bytes = store.virtual_size(image.id, image.format)
            except (OSError, images.Refused) as exc:
                # Launches from it are then checked by the hypervisor alone, which reads the file too.
                log.warning("image_size_unknown", image=image.id, error=str(exc))


@functools.lru_cache(maxsize=8)
def _admin_org_id(url: str, db: Database) -> str:
    with db.read() as session:
        return str(session.execute(select(Organization.id).where(Organization.name == ADMIN_ORG)).scalar_one())


def admin_org_id(db: Database) -> str:
    return _admin_org_id(db.url, db)
