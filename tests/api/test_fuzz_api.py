"""Every operation of the API fuzzed from the app's own OpenAPI description (schemathesis).

Each operation is fuzzed on a small cloud of its own (``tests/api/world.py``: a real tree, two
recording hosts and one of each kind of resource), so that generated calls reach real rows as
well as missing ones: path parameters, query parameters and fields of bodies that name other
resources are, about half of the time, the id or name of a seeded row.  Calls are made as the
admin, as a member of another organization and without a token, with data that fits the
description (positive) and data that breaks it (negative).  No answer may be a server error;
every answer must have a status code the description declares, with the declared content type
and a body of the declared shape; and no call may start a process.

Hypothesis runs derandomized and without its example database, so that every run, on every
machine, makes the same calls; ``EXAMPLES`` bounds it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema

from frontend.api.app import create_app
from frontend.services import Frontend
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import Api
from tests.api.world import World, seed
from tests.support.noprocess import forbid_processes

pytestmark = pytest.mark.slow

#: generated cases per operation and generation mode
EXAMPLES = 25

# The API's timestamps are UTC without an offset, which JSON Schema's "date-time" (RFC 3339)
# requires: the shape of answers is checked, not the formats of their strings.
CONFIG = schemathesis.Config.from_dict({"checks": {"response_schema_conformance": {"validate-formats": False}}})
# The description depends on the routes and their models only (docs/api.md's generator relies on it too).
SCHEMA: OpenApiSchema = schemathesis.openapi.from_dict(create_app(cast(Frontend, None)).openapi(), config=CONFIG)
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}

CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance]

# Path and query parameters and body fields, by name, and the kind of seeded value each takes.
PARAMETER_KINDS = {
    "fip": "fip", "flavor": "flavor", "group": "security_group", "host": "hypervisor", "image": "image",
    "instance": "instance", "keypair": "keypair", "network": "network", "org_id": "org", "port": "port",
    "router_ref": "router", "rule_id": "rule", "subnet": "subnet", "task_id": "task", "user_id": "user",
    "volume": "volume", "zone_id": "zone", "resource": "instance", "user": "user", "name": "hypervisor",
    "snapshot": "snapshot",
}
BODY_KINDS = {
    "flavor": "flavor", "image": "image", "kernel": "image", "initrd": "image", "keypair": "keypair",
    "network": "network", "subnet": "subnet", "port": "port", "security_groups": "security_group",
    "remote_group": "security_group", "server_group": "server_group", "zone": "zone", "instance": "instance",
    "org": "org", "hosts": "hypervisor", "username": "user", "password": "password", "public_key": "public_key",
    "cidr": "cidr", "ip": "ip", "volume": "volume", "snapshot": "snapshot",
}

Draw = Callable[[st.SearchStrategy[Any]], Any]


@pytest.fixture
def world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cloud, World]]:
    for cloud in make_cloud(db_url, tmp_path / "frontend", hosts=2):
        seeded = seed(cloud)
        attempts = forbid_processes(monkeypatch)  # whatever it is sent, the frontend starts no process
        yield cloud, seeded
        assert attempts == []


def _seeded(value: Any, kind: str | None, refs: dict[str, list[str]], draw: Draw) -> Any:
    """``value``, or (half of the time) a seeded value of its kind in its place."""
    if kind not in refs:
        return value
    if isinstance(value, str) and draw(st.booleans()):
        return draw(st.sampled_from(refs[str(kind)]))
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and draw(st.booleans()):
        return draw(st.lists(st.sampled_from(refs[str(kind)]), max_size=3))
    return value


def _seeded_body(body: Any, refs: dict[str, list[str]], draw: Draw) -> Any:
    if isinstance(body, list):
        return [_seeded_body(item, refs, draw) for item in body]
    if not isinstance(body, dict):
        return body
    return {key: _seeded_body(_seeded(value, BODY_KINDS.get(key), refs, draw), refs, draw)
            for key, value in body.items()}


def _seeded_paths(names: list[str], refs: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of seeded rows for an operation's path parameters."""
    kinds = [PARAMETER_KINDS.get(name) for name in names]
    if not names or any(kind not in refs for kind in kinds):
        return []
    return [dict(zip(names, combo)) for combo in itertools.product(*(refs[str(k)] for k in kinds))]


def _send(cloud: Cloud, case: Case, caller: Api) -> Any:
    """The case through the app's TestClient: an exception in the app fails the test with its traceback."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=dict(caller.headers))
    if not caller.headers:
        kwargs["headers"].pop("Authorization", None)
    data = kwargs.pop("data", None)
    if data is not None:
        kwargs["content"] = data
    for unused in ("cookies", "timeout", "verify", "allow_redirects", "files"):
        kwargs.pop(unused, None)
    return cloud.client.request(**kwargs)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_answer_is_declared_and_none_is_a_server_error(label: str, world: tuple[Cloud, World]) -> None:
    cloud, seeded = world
    operation = OPERATIONS[label]
    # One call in five without a token.
    callers = [seeded.admin, seeded.member] * 2 + [Api(cloud.client)]
    names = [p.name for p in operation.path_parameters]
    modes = [GenerationMode.POSITIVE]
    if names or list(operation.query) or list(operation.body):  # else there is nothing to break
        modes.append(GenerationMode.NEGATIVE)
    statuses: Counter[int] = Counter()
    for mode in modes:
        strategies = [operation.as_strategy(mode)] + [operation.as_strategy(mode, path_parameters=choice)
                                                      for choice in _seeded_paths(names, seeded.refs)]

        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def fuzz(data: st.DataObject) -> None:
            case = data.draw(st.one_of(strategies), label="case")
            caller = data.draw(st.sampled_from(callers), label="caller")
            if mode is GenerationMode.POSITIVE:  # negative cases keep what makes them negative
                if isinstance(case.query, dict):
                    case.query = {k: _seeded(v, PARAMETER_KINDS.get(k), seeded.refs, data.draw)
                                  for k, v in case.query.items()}
                case.body = _seeded_body(case.body, seeded.refs, data.draw)
            response = _send(cloud, case, caller)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS)

        fuzz()
    # What the calls met, for whoever tunes the seeding: shown with -s.
    print(label, dict(sorted(statuses.items())))
