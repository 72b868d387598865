"""A backend's own ``/metrics``, off by default: the frontend already exports every backend's
counters through the tree, so this is for looking at one host up close."""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sci.counters import Counters
from service.counter_metrics import counter_families

__all__ = ["parse_listen", "serve"]


class _CountersCollector(Collector):
    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        # A dict copy is one step under the GIL: the tree's thread may add keys meanwhile.
        yield from counter_families([((), dict(self.counters.totals))])


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ValueError naming the setting otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics_listen: {listen!r} is not host:port (e.g. 127.0.0.1:9464)")
    return host.strip("[]"), int(port)


def serve(counters: Counters, listen: str) -> None:
    """Serve ``counters`` at http://<listen>/metrics from a daemon thread."""
    host, port = parse_listen(listen)
    registry = CollectorRegistry()
    registry.register(_CountersCollector(counters))
    start_http_server(port, addr=host, registry=registry)
