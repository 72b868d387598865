"""Ops about the host itself: ``ping`` (a round trip) and ``info`` (what the host is)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import psutil

from ..registry import Op, OpRegistry

__all__ = ["register"]


def ping(args: dict[str, Any]) -> dict[str, Any]:
    return {}


def info(args: dict[str, Any]) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    load1, load5, load15 = os.getloadavg()
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count() or 0,
        "memory_total": memory.total,
        "memory_available": memory.available,
        "load": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "uptime_s": int(time.time() - psutil.boot_time()),
    }


def register(registry: OpRegistry) -> None:
    registry.register(Op("ping", ping, durable=False, inline=True))
    registry.register(Op("info", info, durable=False))
