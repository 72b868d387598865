"""What each kind of task does, step by step (see ``frontend/tasks.py`` for how steps are journalled)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import instances, network, volumes

if TYPE_CHECKING:
    from ..services import Frontend

__all__ = ["register_all"]


def register_all(frontend: "Frontend") -> None:
    for kind, workflow in {**instances.workflows(frontend), **volumes.workflows(frontend),
                           **network.workflows(frontend)}.items():
        frontend.tasks.register(kind, workflow)
