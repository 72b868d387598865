"""The frontend's state: models, engine and migrations."""

from .engine import Database, upgrade

__all__ = ["Database", "upgrade"]
