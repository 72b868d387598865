"""The highest root epoch a node has seen, kept on disk so that a restart does not forget it.

The epoch is the frontend leader's generation, carried by every command (``docs/ha.md``); a node
refuses commands of a lower one. In memory alone a restarted node would take a paused former
leader's commands until the current leader welcomed it.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from .files import write_atomic

__all__ = ["EpochFile"]

log = structlog.get_logger("service.epochs")


class EpochFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int:
        """The saved epoch; 0 if none was ever saved, or if the file is unreadable (said in the log)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("root_epoch_unreadable", path=str(self.path), reason=str(exc))
            return 0
        if not text.strip().isdigit():
            log.warning("root_epoch_unreadable", path=str(self.path), reason="not a number")
            return 0
        return int(text)

    def save(self, epoch: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, f"{epoch}\n".encode())
