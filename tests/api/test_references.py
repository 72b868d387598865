"""References to resources (an id or a name) in paths, queries and bodies.

Every id and name has the form of a name, so a reference with any other character names nothing
and is refused as invalid, naming the parameter, before it reaches a query.  Found by the API
fuzzer: PostgreSQL cannot even compare a text holding NUL, so such a reference was a 500 there.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_networks import invalid, network

# (method, path, keyword arguments, the field the refusal names); {bad} is the bad reference
REFERENCES = [
    ("get", "/v1/networks/{bad}", {}, "network"),
    ("delete", "/v1/flavors/{bad}", {}, "flavor"),
    ("get", "/v1/images/{bad}/file", {}, "image"),
    ("get", "/v1/ports", {"params": {"instance": "{bad}"}}, "instance"),
    ("get", "/v1/subnets", {"params": {"network": "{bad}"}}, "network"),
    ("get", "/v1/tasks", {"params": {"resource": "{bad}"}}, "resource"),
    ("post", "/v1/subnets", {"json": {"name": "s", "network": "{bad}", "cidr": "10.1.0.0/24"}}, "network"),
    ("post", "/v1/ports", {"json": {"network": "net", "security_groups": ["web", "{bad}"]}}, "security_groups.1"),
    ("post", "/v1/instances", {"json": {"name": "vm", "flavor": "f", "image": "i", "nics": [{"network": "{bad}"}]}},
     "nics.0.network"),
]


def _with(value: Any, bad: str) -> Any:
    if isinstance(value, str):
        return value.replace("{bad}", bad)
    if isinstance(value, list):
        return [_with(v, bad) for v in value]
    if isinstance(value, dict):
        return {k: _with(v, bad) for k, v in value.items()}
    return value


@pytest.mark.parametrize("method, path, kwargs, field", REFERENCES)
def test_a_reference_no_id_or_name_could_have_is_invalid(admin: Api, method: str, path: str,
                                                         kwargs: dict[str, Any], field: str) -> None:
    api = admin.tenant("acme")
    network(api)
    api.ok("post", "/v1/security-groups", 201, json={"name": "web"})
    for bad in ("a\x00b", "a b", "-rf", "x" * 65):
        in_path = bad.replace("\x00", "%00").replace(" ", "%20")
        error = invalid(getattr(api, method)(path.replace("{bad}", in_path), **_with(kwargs, bad)), field)
        assert error["reason"].startswith("must be an id or a name"), bad


def test_references_still_find_rows_by_id_name_and_address(admin: Api) -> None:
    api = admin.tenant("acme")
    net, sub = network(api)
    assert api.ok("get", f"/v1/networks/{net['id']}") == api.ok("get", "/v1/networks/net")
    assert [s["id"] for s in api.ok("get", "/v1/subnets", params={"network": "net"})["items"]] == [sub["id"]]
