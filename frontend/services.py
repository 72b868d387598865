"""The frontend's parts, built once and shared by the API, the task engine and the monitors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sci import TreeRoot

from service.config import FrontendConfig

from . import images
from .db import Database
from .imagelinks import ImageLinks
from .scheduler import Scheduler
from .tasks import TaskEngine
from .workflows import register_all

__all__ = ["Frontend"]


@dataclass
class Frontend:
    config: FrontendConfig
    db: Database
    #: the message tree's root; None only in API tests that send nothing to hosts
    tree: TreeRoot | None
    scheduler: Scheduler = field(init=False)
    image_links: ImageLinks = field(init=False)
    tasks: TaskEngine = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.config.scheduler)
        # A link must outlive the longest launch that may need it, retries on other hosts included.
        ttl = self.config.scheduler.launch_timeout_s * (self.config.scheduler.max_attempts + 1)
        self.image_links = ImageLinks.load(self.data_dir, self.config.api.url, ttl)
        self.tasks = TaskEngine(self.db, self.tree)
        register_all(self)

    @property
    def data_dir(self) -> Path:
        return Path(self.config.data_dir)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / images.SUBDIR
