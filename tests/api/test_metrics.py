"""Health probes and Prometheus metrics, parsed with prometheus-client's own parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from frontend.api.app import create_app
from frontend.db import Database
from frontend.services import Frontend
from service.config import FrontendConfig
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    yield from make_cloud(db_url, tmp_path / "frontend", hosts=2)


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_probes_and_metrics_follow_what_happens(cloud: Cloud) -> None:
    client = cloud.client
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "tree": "ok"}
    before = _samples(client)
    assert _value(before, "cloudland_hypervisors", status="up") == 2
    assert _value(before, "cloudland_tree_nodes", role="backend", state="up") == 2
    assert _value(before, "cloudland_heartbeat_age_seconds_count") == 2
    assert _value(before, "cloudland_capacity", zone="", resource="vcpus", kind="total") > 0

    cloud.admin.ok("post", "/v1/tree/ping", json={})
    cloud.admin.get("/v1/flavors/nope")
    cloud.computes["hv0"].fail["instance.create"] = "broken"
    cloud.computes["hv1"].fail["instance.create"] = "broken"
    cloud.admin.ok("post", "/v1/flavors", 201, json={"name": "small", "vcpus": 1, "memory_mb": 64, "disk_gb": 1})
    image = cloud.admin.ok("post", "/v1/images", 201, json={"name": "img", "format": "raw"})
    cloud.admin.ok("put", f"/v1/images/{image['id']}/file", content=b"raw bytes")
    accepted = cloud.admin.ok("post", "/v1/instances", 202, json={"name": "vm", "flavor": "small", "image": "img"})
    assert cloud.wait_task(cloud.admin, accepted["task"]["id"])["status"] == "failed"

    after = _samples(client)
    assert _value(after, "cloudland_commands_total", op="ping", outcome="ok") == 1
    assert _value(after, "cloudland_command_host_results_total", op="ping", status="ok") == 2
    assert _value(after, "cloudland_commands_total", op="instance.create", outcome="failed") == 2
    assert _value(after, "cloudland_command_host_results_total", op="instance.create", status="error") == 2
    assert _value(after, "cloudland_command_seconds_count", op="ping") == 1
    assert _value(after, "cloudland_api_requests_total", method="GET", route="/v1/flavors/{flavor}",
                  status="404") == 1
    assert _value(after, "cloudland_api_request_seconds_count", method="POST", route="/v1/instances") == 1
    assert _value(after, "cloudland_tasks", status="failed") == 1
    assert _value(after, "cloudland_tree_commands_total") > _value(before, "cloudland_tree_commands_total")


def test_readyz_says_when_the_database_is_away(tmp_path: Path) -> None:
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"
    frontend = Frontend(FrontendConfig(data_dir=str(tmp_path), database=unreachable), Database(unreachable), None)
    with TestClient(create_app(frontend)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"].startswith("failed: OperationalError") and checks["tree"] == "not running"
        assert client.get("/metrics").status_code == 200  # what can be told still is
    frontend.tasks.stop()


def test_metrics_need_no_token_but_tell_no_tenant_data(admin: Api) -> None:
    text = admin.client.get("/metrics").text
    assert "cloudland_api_requests_total" in text and "acme" not in text


def test_dashboard_and_alerts_use_only_metrics_the_frontend_exports(cloud: Cloud) -> None:
    import json
    import re

    import yaml

    exported = set()
    for family in cloud.frontend.metrics.registry.collect():
        exported.update(family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum"))
    etc = Path(__file__).resolve().parents[2] / "etc"
    assert json.loads((etc / "grafana" / "cloudland.json").read_text())["panels"]
    assert yaml.safe_load((etc / "prometheus" / "cloudland-alerts.yml").read_text())["groups"][0]["rules"]
    assert yaml.safe_load((etc / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    for path in (etc / "grafana" / "cloudland.json", etc / "prometheus" / "cloudland-alerts.yml"):
        used = set(re.findall(r"cloudland_[a-z_]+", path.read_text()))
        assert used and used <= exported, f"{path.name} uses metrics the frontend does not export: {used - exported}"


def test_the_tree_view_shows_every_node_and_the_fan_out(cloud: Cloud) -> None:
    view = cloud.admin.ok("get", "/v1/tree")
    assert view["fanout"] == cloud.root.settings.fanout
    assert {(n["node_id"], n["role"], n["parent"]) for n in view["nodes"] if n["role"] == "backend"} == {
        ("hv0", "backend", cloud.root.node_id), ("hv1", "backend", cloud.root.node_id)}
