"""A backend's own /metrics (off by default) serves its counters under the frontend's names."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.metrics import parse_listen, serve
from sci.counters import Counters


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_local_metrics_show_the_backends_counters() -> None:
    counters = Counters()
    counters.add("commands_run", 3)
    counters.add("handler_errors")
    counters.add("op_count:ping", 3)
    counters.add("op_seconds:ping", 0.25)
    counters.add("frames_dropped:oversized")
    port = _free_port()
    serve(counters, f"127.0.0.1:{port}")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("cloudland_backend_commands_run_total", ())] == 3
    assert samples[("cloudland_backend_handler_errors_total", ())] == 1
    assert samples[("cloudland_backend_ops_total", (("op", "ping"),))] == 3
    assert samples[("cloudland_backend_op_seconds_total", (("op", "ping"),))] == 0.25
    assert samples[("cloudland_tree_frames_dropped_total", (("reason", "oversized"),))] == 1
    assert samples[("cloudland_tree_false_failures_total", ())] == 0  # there before it first counts


@pytest.mark.parametrize("bad", ["9464", "host:", ":9464", "host:port", "host:70000"])
def test_a_wrong_listen_address_names_the_setting(bad: str) -> None:
    with pytest.raises(ValueError, match="metrics_listen"):
        parse_listen(bad)


def test_listen_addresses_parse() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
