"""What a node that owns its thread's event loop does: run until told to stop."""

from __future__ import annotations

from .reactor import Reactor

__all__ = ["LoopNode"]


class LoopNode:
    reactor: Reactor

    def start(self) -> None:
        """Open sockets and schedule timers; the loop is not running yet."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``start`` opened (the loop has ended)."""
        raise NotImplementedError

    def run(self) -> None:
        """Serve in this thread until ``stop``."""
        self.start()
        try:
            self.reactor.run()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask the loop to end (safe from any thread or a signal handler)."""
        self.reactor.call_soon_threadsafe(self.reactor.stop)
