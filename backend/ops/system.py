"""Ops about the host itself: ``ping`` (a round trip) and ``info`` (what the host is and can hold)."""

from __future__ import annotations

import os
import socket
import functools
import time
from typing import Any

import psutil

from service.config import CapacitySection

from ..argcheck import Record, Text, optional
from ..registry import Op, OpRegistry

__all__ = ["register"]

PING_ARGS = Record({
    # A caller's tag, used nowhere: the bench tags each ping to count how often a host ran it.
    "round": optional(Text(64, one_line=True)),
})
INFO_ARGS = Record({})


def ping(args: dict[str, Any]) -> dict[str, Any]:
    return {}


def info(zone: str, data_dir: str, vtep: str, offered: CapacitySection, args: dict[str, Any]) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(data_dir)
    load1, load5, load15 = os.getloadavg()
    return {
        "hostname": socket.gethostname(),
        # the scheduler places instances within these three
        "cpus": offered.vcpus or os.cpu_count() or 0,
        "memory_total": offered.memory_mb << 20 or memory.total,
        "memory_available": memory.available,
        # instances' disks and volumes live under the data directory
        "disk_total": offered.disk_gb << 30 or disk.total,
        "disk_free": disk.free,
        "zone": zone,
        # the underlay address of this host's VXLAN tunnels: where other hosts send its ports' frames
        "vtep": vtep or None,
        "load": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "uptime_s": int(time.time() - psutil.boot_time()),
    }


def register(registry: OpRegistry, zone: str = "", data_dir: str = "/", vtep: str = "",
             offered: CapacitySection = CapacitySection()) -> None:
    registry.register(Op("ping", ping, PING_ARGS, durable=False, inline=True))
    registry.register(Op("info", functools.partial(info, zone, data_dir, vtep, offered), INFO_ARGS, durable=False))
