"""The network ops of ``docs/ops.md``: each reads its checked body, calls the driver, shapes the payload.

The registry has checked every body against the op's schema (``spec.ARGS``) before a handler
runs; ``spec.desired_state`` checks what a schema cannot (a port on a subnet of another
network, a gateway outside its subnet).
"""

from __future__ import annotations

from typing import Any

import structlog

from ..registry import Op, OpError
from .driver import NetworkDriver
from .exceptions import NetworkError
from .spec import ARGS, desired_state

__all__ = ["ops"]

log = structlog.get_logger("backend.network")


def ops(driver: NetworkDriver) -> list[Op]:
    def sync(args: dict[str, Any]) -> dict[str, Any]:
        try:
            return driver.sync(desired_state(args, driver.settings.vtep))
        except NetworkError as exc:
            log.warning("network_sync_failed", error=str(exc), revision=args.get("revision"))
            raise OpError(f"net.sync: {exc}", exc.exit_status) from exc

    def inventory(args: dict[str, Any]) -> dict[str, Any]:
        try:
            return driver.inventory()
        except NetworkError as exc:
            raise OpError(f"net.inventory: {exc}", exc.exit_status) from exc

    # net.sync is journalled: a replay of an old body (a command resent after a frontend's
    # restart) is answered from the journal, never applied over a newer state.
    # A sync describes what must be, not what to do: applying it again changes nothing.
    return [Op("net.sync", sync, ARGS["net.sync"], durable=True, idempotent=True),
            Op("net.inventory", inventory, ARGS["net.inventory"], durable=False)]
