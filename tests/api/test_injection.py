"""Hostile strings in every name and free-text field the API takes, and proof that no API input
reaches a shell.

The fields come from the app's OpenAPI description: every string field of a request body (nested
ones too) that is a name or a reference to one (the name pattern), and every free-text field.  A
name refuses every hostile string with 422 naming the field (413 for a body over the size cap,
which is refused before it is parsed) and nothing in the database changes.  Free text (a
security group's description, an instance's user data) takes them all as they are, except NUL
(no database text can hold it) and lengths over its cap, and keeps them verbatim.

Every test here runs with process creation made to fail loudly: the frontend starts no process
whatever it is sent.  ``test_the_frontend_has_no_way_to_start_a_process`` adds the static half:
the frontend's code does not even import a way to.
"""

from __future__ import annotations

import ast
import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, cast

import pytest
from sqlalchemy import select

from frontend.api.app import create_app
from frontend.api.ratelimit import RateLimits
from frontend.db.models import AuditRecord, Base, Instance, SecurityGroup
from frontend.services import Frontend
from tests.api.cloud import Cloud, make_cloud
from tests.api.conftest import ADMIN_PASSWORD, Api, error_of
from tests.api.world import PUBLIC_KEY, World, seed
from tests.support.noprocess import forbid_processes

REPO = Path(__file__).resolve().parents[2]
SPEC = create_app(cast(Frontend, None)).openapi()
SCHEMAS = SPEC["components"]["schemas"]
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TEXT_PATTERN = "^[^\\u0000]*$"

TEN_MB = "x" * (10 << 20)
#: taken as they are by free text; refused by names
HOSTILE = ["; rm -rf /", "$(reboot)", "`id`", "a\nb", "ＡＢＣ", "e\u0301", "\u202eabc", "../../etc/passwd", "-rf",
           "--help", "a b", "x" * 65, "<script>", "' OR 1=1 --"]
#: refused by every string field
NEVER = ["a\x00b", "\ud800"]

Path_ = tuple[str | int, ...]

# Each create or update call with such fields, as its caller makes it with valid values.  The
# call itself must not be refused for its input, or a refusal with a hostile value would prove
# nothing; it may be refused for the state of things (409: a tree without CURVE, say).
CALLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "POST /v1/networks": ("member", "/v1/networks", {"name": "n2"}),
    "PATCH /v1/networks/{network}": ("member", "/v1/networks/bare", {"name": "bare"}),
    "POST /v1/subnets": ("member", "/v1/subnets", {"name": "s2", "network": "bare", "cidr": "10.7.0.0/24"}),
    "PATCH /v1/subnets/{subnet}": ("member", "/v1/subnets/sub", {"name": "sub"}),
    "POST /v1/ports": ("member", "/v1/ports", {"name": "p2", "network": "net", "security_groups": ["web"]}),
    "PATCH /v1/ports/{port}": ("member", "/v1/ports/p1", {"name": "p1", "security_groups": ["web"]}),
    "POST /v1/routers": ("member", "/v1/routers", {"name": "r2", "network": "bare"}),
    "PATCH /v1/routers/{router_ref}": ("member", "/v1/routers/r1", {"name": "r1"}),
    "POST /v1/floating-ips": ("member", "/v1/floating-ips", {"network": "ext"}),
    "PATCH /v1/floating-ips/{fip}": ("member", "/v1/floating-ips/{fip}", {"port": "p1"}),
    "POST /v1/security-groups": ("member", "/v1/security-groups", {"name": "g2", "description": "d"}),
    "PATCH /v1/security-groups/{group}": ("member", "/v1/security-groups/web", {"name": "web", "description": "d"}),
    "POST /v1/security-groups/{group}/rules": ("member", "/v1/security-groups/web/rules",
                                               {"direction": "ingress", "remote_group": "web"}),
    "POST /v1/tokens": ("nobody", "/v1/tokens", {"username": "admin", "password": ADMIN_PASSWORD}),
    "POST /v1/orgs": ("admin", "/v1/orgs", {"name": "o2"}),
    "POST /v1/users": ("admin", "/v1/users", {"name": "u2", "password": "long-enough", "org": "acme"}),
    "POST /v1/zones": ("admin", "/v1/zones", {"name": "z2"}),
    "POST /v1/hypervisors/enrolments": ("admin", "/v1/hypervisors/enrolments", {"name": "hv9"}),
    "POST /v1/flavors": ("admin", "/v1/flavors", {"name": "f2", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}),
    "POST /v1/instances": ("member", "/v1/instances", {
        "name": "vm2", "flavor": "small", "image": "tiny", "keypair": "key", "user_data": "#cloud-config",
        "nics": [{"network": "net", "security_groups": ["web"]}], "security_groups": ["web"],
        "server_group": "apart", "zone": "spare"}),
    "POST /v1/instances/{instance}/resize": ("member", "/v1/instances/vm/resize", {"flavor": "large"}),
    "POST /v1/instances/{instance}/image": ("member", "/v1/instances/vm/image", {"name": "img2"}),
    "POST /v1/volumes": ("member", "/v1/volumes", {"name": "vol2", "size_gb": 1, "instance": "vm", "zone": "spare"}),
    "POST /v1/volumes/{volume}/attach": ("member", "/v1/volumes/vol/attach", {"instance": "vm"}),
    "POST /v1/snapshots": ("member", "/v1/snapshots", {"name": "snap2", "volume": "vol"}),
    "POST /v1/images": ("member", "/v1/images", {"name": "img2", "format": "raw", "kernel": "queued",
                                                 "initrd": "queued"}),
    "PATCH /v1/images/{image}": ("member", "/v1/images/queued", {"name": "queued"}),
    "POST /v1/keypairs": ("member", "/v1/keypairs", {"name": "k2", "public_key": PUBLIC_KEY}),
    "POST /v1/server-groups": ("member", "/v1/server-groups", {"name": "sg2", "policy": "anti-affinity"}),
}
#: the free-text fields, and the column each is kept in
FREE_TEXT = {
    ("POST /v1/security-groups", ("description",)): (SecurityGroup, "description"),
    ("PATCH /v1/security-groups/{group}", ("description",)): (SecurityGroup, "description"),
    ("POST /v1/instances", ("user_data",)): (Instance, "user_data"),
}


def _variants(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return list(schema.get("anyOf") or [schema])


def _model(ref: dict[str, Any]) -> dict[str, Any]:
    return dict(SCHEMAS[ref["$ref"].rsplit("/", 1)[-1]])


def _string_fields(model: dict[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, str, int | None]]:
    """Every name (``"name"``) and free-text (``"text"``) field of a body model, nested ones too,
    with its maximum length."""
    kinds = {NAME_PATTERN: "name", TEXT_PATTERN: "text"}
    for name, prop in model.get("properties", {}).items():
        for variant in _variants(prop):
            path: Path_ = prefix + (name,)
            if variant.get("type") == "array":
                variant, path = variant["items"], path + (0,)
            if "$ref" in variant:
                yield from _string_fields(_model(variant), path)
            elif variant.get("type") == "string" and variant.get("pattern") in kinds:
                yield path, kinds[variant["pattern"]], variant.get("maxLength")


def _fields() -> list[tuple[str, Path_, str, int | None]]:
    found = []
    for template, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            ref = next((v for v in _variants(content["schema"]) if "$ref" in v), None) if content else None
            if ref is not None:
                found += [(f"{method.upper()} {template}", *field) for field in _string_fields(_model(ref))]
    return found


FIELDS = _fields()


def _with(body: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``value`` at ``path`` (made where the body has nothing there)."""
    body = copy.deepcopy(body)
    at: Any = body
    for key, after in zip(path, path[1:]):
        if isinstance(key, int):
            while len(at) <= key:
                at.append({} if isinstance(after, str) else [])
        elif key not in at:
            at[key] = [] if isinstance(after, int) else {}
        at = at[key]
    if isinstance(path[-1], int):
        del at[path[-1]:]
        at.append(value)
    else:
        at[path[-1]] = value
    return body


def _send(api: Api, method: str, path: str, body: dict[str, Any]) -> Any:
    # As JSON with \u escapes, so that a lone surrogate goes out as the text a client can send.
    return getattr(api, method.lower())(path, content=json.dumps(body),
                                        headers={"Content-Type": "application/json"})


def _rows(frontend: Frontend) -> dict[str, list[str]]:
    """The whole database but the audit log (which records refusals too), to see that nothing changed,
    once the tasks that earlier calls started have finished."""
    frontend.tasks.wait_idle(10)
    with frontend.db.read() as session:
        return {table.name: sorted(repr(tuple(row)) for row in session.execute(select(table)))
                for table in Base.metadata.sorted_tables if table.name != AuditRecord.__tablename__}


@pytest.fixture
def world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cloud, World]]:
    for cloud in make_cloud(db_url, tmp_path / "frontend", hosts=2):
        seeded = seed(cloud)
        # These tests send hundreds of calls a second; rate limits are not what they are about.
        api = replace(cloud.frontend.config.api, token_rate_per_s=1_000_000, token_burst=1_000_000,
                      login_rate_per_min=1_000_000, login_burst=1_000_000)
        cloud.frontend.rate_limits = RateLimits.from_config(api)
        attempts = forbid_processes(monkeypatch)
        yield cloud, seeded
        assert attempts == []


def _call(cloud: Cloud, seeded: World, label: str) -> tuple[Api, str, str, dict[str, Any]]:
    who, path, body = CALLS[label]
    api = {"admin": seeded.admin, "member": seeded.member, "nobody": Api(cloud.client)}[who]
    return api, label.split()[0], path.replace("{fip}", seeded.refs["fip"][0]), body


def test_every_field_is_covered() -> None:
    labels = {label for label, _, _, _ in FIELDS}
    assert labels == set(CALLS), f"give a valid call for {labels - set(CALLS)} in CALLS (and drop stale ones)"
    assert {(label, path) for label, path, kind, _ in FIELDS if kind == "text"} == set(FREE_TEXT)


def test_names_refuse_hostile_strings_and_change_nothing(world: tuple[Cloud, World]) -> None:
    cloud, seeded = world
    for label in sorted(CALLS):
        api, method, path, body = _call(cloud, seeded, label)
        before = _rows(cloud.frontend)
        for field in [path for of, path, kind, _ in FIELDS if of == label and kind == "name"]:
            name = ".".join(map(str, field))
            for value in HOSTILE + NEVER:
                response = _send(api, method, path, _with(body, field, value))
                error = error_of(response)
                assert (response.status_code, error["code"], error["field"]) == (422, "invalid", name), \
                    (label, name, value, error)
            response = _send(api, method, path, _with(body, field, TEN_MB))
            assert response.status_code == 413 and error_of(response)["code"] == "too_large", (label, name)
        assert _rows(cloud.frontend) == before, f"{label} changed the database when it refused"
        response = _send(api, method, path, body)
        assert response.status_code < 500 and response.status_code not in (413, 422), (label, response.text)


def test_free_text_is_kept_verbatim_but_not_nul_and_not_too_long(world: tuple[Cloud, World]) -> None:
    cloud, seeded = world
    for n, (label, field, _, limit) in enumerate(f for f in FIELDS if f[2] == "text"):
        model, column = FREE_TEXT[label, field]
        assert limit, f"{label} {column}: free text must have a maximum length"
        api, method, path, body = _call(cloud, seeded, label)
        before = _rows(cloud.frontend)
        for value in NEVER + ["x" * (limit + 1)]:
            response = _send(api, method, path, _with(body, field, value))
            assert (response.status_code, error_of(response)["field"]) == (422, column), (label, repr(value[:10]))
        assert _send(api, method, path, _with(body, field, TEN_MB)).status_code == 413
        assert _rows(cloud.frontend) == before
        for i, value in enumerate(HOSTILE + ["x" * limit]):
            fresh = _with(body, ("name",), f"t{n}-{i}") if method == "POST" else body
            response = _send(api, method, path, _with(fresh, field, value))
            assert response.status_code in (200, 201, 202), (label, value, response.text)
            answer = response.json()
            row_id = answer["resource"]["id"] if "resource" in answer else answer["id"]
            with cloud.frontend.db.read() as session:
                assert getattr(session.get(model, row_id), column) == value, (label, value)


def test_the_frontend_has_no_way_to_start_a_process() -> None:
    # The static half of the proof: no module of the frontend imports or calls a way to start one.
    spawning = {"subprocess", "pty", "multiprocessing", "pexpect", "sh", "plumbum"}
    calls = {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "create_subprocess_exec",
             "create_subprocess_shell"} | {f"exec{s}" for s in ("v", "ve", "vp", "vpe", "l", "le", "lp", "lpe")} | \
        {f"spawn{s}" for s in ("v", "ve", "vp", "vpe", "l", "le", "lp", "lpe")}
    found = []
    for source in sorted((REPO / "frontend").rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{source}: import {n}" for n in names if n.split(".")[0] in spawning]
            if isinstance(node, ast.Attribute) and node.attr in calls:
                found.append(f"{source}:{node.lineno}: .{node.attr}")
    assert found == []
