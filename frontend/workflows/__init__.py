"""What each kind of task does, step by step (see ``frontend/tasks.py`` for how steps are journalled)."""

from __future__ import annotations

from pathlib import Path

from ..db import Database
from ..imagelinks import ImageLinks
from ..images import ImageStore
from ..scheduler import Scheduler
from ..tasks import TaskEngine
from . import images, instances, network, volumes

__all__ = ["register_all"]


def register_all(engine: TaskEngine, db: Database, scheduler: Scheduler, links: ImageLinks, images_dir: Path) -> None:
    for kind, workflow in {**instances.workflows(db, scheduler, links), **volumes.workflows(db, scheduler),
                           **network.workflows(),
                           **images.workflows(db, links, ImageStore(images_dir))}.items():
        engine.register(kind, workflow)
