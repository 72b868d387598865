"""The frontend's parts, built once and shared by the API, the task engine and the monitors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sci import CommandHandle, Targets, TreeRoot

from service.config import FrontendConfig

from . import images
from .api.ratelimit import RateLimits
from .db import Database
from .imagelinks import ImageLinks
from .liveconsole import ConsoleHub
from .metrics import Metrics, StateCollector
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
    metrics: Metrics = field(init=False)
    #: the lease's generation this frontend leads under (0 on SQLite: one frontend, no lease);
    #: None while it does not lead
    generation: int | None = field(init=False, default=None)
    #: the API's rate limits: in the database on PostgreSQL, where every frontend counts against them
    rate_limits: RateLimits = field(init=False)
    #: live serial consoles: the leader's duties start and stop them with its term
    consoles: ConsoleHub = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics()
        self.rate_limits = RateLimits.from_config(self.config.api, self.db)
        self.scheduler = Scheduler(self.config.scheduler, self.tree.attached if self.tree is not None else None,
                                   down_wait_s=self.config.host_wait_s)
        # A link must outlive the longest launch that may need it, retries on other hosts included.
        ttl = self.config.scheduler.launch_timeout_s * (self.config.scheduler.max_attempts + 1)
        self.image_links = ImageLinks.load(self.data_dir, self.config.api.url, ttl)
        self.tasks = TaskEngine(self.db, self.submit if self.tree is not None else None,
                                host_wait_s=self.config.host_wait_s)
        self.consoles = ConsoleHub(self.submit)
        self.metrics.registry.register(StateCollector(self.db, self.config.scheduler, self.tasks, self.tree))
        register_all(self.tasks, self.db, self.scheduler, self.image_links, self.images_dir)

    def submit(self, op: str, args: Any, targets: Targets, timeout: float, cmd_id: str | None = None) -> CommandHandle:
        """Send a command through the tree, counted in the metrics: every command the frontend itself sends
        goes here (the root-only control socket's do not)."""
        if self.tree is None:
            raise RuntimeError("this frontend runs without a tree")
        return self.metrics.watch(self.tree.submit(op, args, targets, timeout=timeout, cmd_id=cmd_id))

    @property
    def data_dir(self) -> Path:
        return Path(self.config.data_dir)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / images.SUBDIR
