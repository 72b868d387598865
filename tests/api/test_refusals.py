"""The OpenAPI description declares every refusal in the shape the API answers with.

``test_fuzz_api.py`` holds the answers to the description; this checks the description itself,
quickly: FastAPI's own 422 shape (``{"detail": [...]}``), which the API never answers with, is
gone, and each operation declares the refusals its shape implies.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any, Callable, Iterator, cast

from fastapi.routing import APIRoute, iter_route_contexts

from frontend.api.app import create_app
from frontend.api.refusals import MEANINGS
from frontend.services import Frontend

APP = create_app(cast(Frontend, None))
SPEC = APP.openapi()
ERROR = {"$ref": "#/components/schemas/ErrorView"}


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


def test_every_refusal_has_the_error_shape() -> None:
    assert "HTTPValidationError" not in SPEC["components"]["schemas"]
    assert set(SPEC["components"]["schemas"]["ErrorDetail"]["properties"]) == {"code", "message", "field", "reason"}
    for method, path, operation in _operations():
        for status, answer in operation["responses"].items():
            if int(status) >= 400 and path.startswith("/v1/"):
                assert answer["content"]["application/json"]["schema"] == ERROR, (method, path, status)
                assert answer["description"] == MEANINGS[int(status)]


def _declared(method: str, path: str) -> list[int]:
    return sorted(int(s) for s in SPEC["paths"][path][method]["responses"] if int(s) >= 400)


def test_each_operation_declares_what_its_shape_implies_and_what_its_route_adds() -> None:
    assert _declared("get", "/v1/networks") == [401, 403, 422, 429]  # 403: all_orgs=true, for admins only
    assert _declared("get", "/v1/networks/{network}") == [401, 404, 409, 422, 429]  # 409: two shared, one name
    assert _declared("post", "/v1/networks") == [401, 403, 404, 409, 413, 422, 429]
    assert _declared("delete", "/v1/networks/{network}") == [401, 403, 404, 409, 422, 429]
    assert _declared("post", "/v1/tokens") == [401, 413, 422, 429]
    assert _declared("get", "/v1/instances/{instance}/console") == [401, 404, 409, 422, 429, 503]
    assert _declared("get", "/healthz") == []


def test_routes_known_to_refuse_with_a_role_or_a_conflict_declare_it() -> None:
    assert {403, 409} <= set(_declared("delete", "/v1/networks/{network}"))  # members only; a network in use
    assert {403, 409} <= set(_declared("post", "/v1/instances/{instance}/image"))  # members only; not stopped
    assert 403 in _declared("get", "/v1/hypervisors")  # admins only
    assert 403 in _declared("get", "/v1/instances")  # all_orgs=true: admins only, declared by its dependency
    assert 503 in _declared("post", "/v1/tree/ping")  # a standby's not_leading


def _reached(endpoint: Callable[..., Any]) -> set[str]:
    """Names of what ``endpoint`` calls, and what the functions of its module that it calls call, and so on."""
    module = ast.parse(inspect.getsource(inspect.getmodule(endpoint)))  # type: ignore[arg-type]
    functions = {f.name: f for f in ast.walk(module) if isinstance(f, ast.FunctionDef)}
    names: set[str] = set()
    pending, seen = [endpoint.__name__], set()
    while pending:
        name = pending.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for call in (n for n in ast.walk(functions[name]) if isinstance(n, ast.Call)):
            called = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            names.add(called)
            pending.append(called)
    return names


def test_every_role_check_and_call_through_the_tree_is_declared() -> None:
    # What a route's code does, read from its source: a role it checks is a 403, the tree it
    # calls through a 503 (not_leading on a standby).  Declared ones must not drift from it.
    checked = 0
    for route in iter_route_contexts(APP.routes):
        if not isinstance(route.original_route, APIRoute) or not route.path or not route.path.startswith("/v1/"):
            continue
        reached = _reached(route.endpoint)
        for method in route.methods or ():
            declared = _declared(method.lower(), route.path)
            if reached & {"require", "Forbidden"}:
                assert 403 in declared, (method, route.path)
            if reached & {"leading_tree", "refuse_on_standby"}:
                assert 503 in declared, (method, route.path)
            checked += 1
    assert checked > 50
