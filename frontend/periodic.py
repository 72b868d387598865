"""A job the frontend runs every so many seconds on its own thread, surviving its own failures."""

from __future__ import annotations

import threading

import structlog

__all__ = ["Periodic"]

log = structlog.get_logger("frontend.periodic")


class Periodic:
    """Subclasses implement ``run_once``; a failed round (the database briefly away, say) is logged
    and the next round comes as usual."""

    name = "periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def run_once(self) -> object:
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        """Set once ``stop()`` was called: a long round should end early."""
        return self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # it may never have been started
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("periodic_round_failed", job=self.name)
