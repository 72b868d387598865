"""What each kind of task does, step by step (see ``frontend/tasks.py`` for how steps are journalled)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..images import ImageStore
from . import images, instances, network, volumes

if TYPE_CHECKING:
    from ..services import Frontend

__all__ = ["register_all"]


def register_all(frontend: "Frontend") -> None:
    store = ImageStore(frontend.images_dir)
    for kind, workflow in {**instances.workflows(frontend), **volumes.workflows(frontend),
                           **network.workflows(frontend),
                           **images.workflows(frontend.db, frontend.image_links, store)}.items():
        frontend.tasks.register(kind, workflow)
