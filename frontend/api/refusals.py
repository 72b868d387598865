"""The refusals each operation may answer with, declared in the API's OpenAPI description.

Most follow from an operation's shape, and are declared here for all of them: a token may be
missing or spent (401) and calls with one are rate-limited (429); parameters and bodies may be
invalid (422), bodies too large (413); a path names a resource that may not exist (404); a write
that takes input may need a role the caller lacks (403), name other resources that do not exist
(404) or clash with the state of things (409).  A route that may refuse in other ways declares
those itself, with ``responses=refusals(...)``, or, where a dependency refuses for every route
that uses it, the dependency declares them once with ``@refuses(...)``.  Every refusal has the
one error shape, ``ErrorView``, and FastAPI's own shape for 422, which this API never answers
with, is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from ..errors import ApiError
from .schemas import ErrorView

__all__ = ["ApiApp", "refusals", "refuses"]

_REF = "#/components/schemas/{model}"
_WRITES = ("post", "put", "patch", "delete")
#: the components of FastAPI's 422 shape
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")
#: where ``refuses`` keeps a dependency's statuses
_MARK = "__cloudland_refusals__"

F = TypeVar("F", bound=Callable[..., Any])


def _codes() -> dict[int, str]:
    codes: dict[int, list[str]] = {}
    pending: list[type[ApiError]] = [ApiError]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls is not ApiError:
            codes.setdefault(cls.http_status, []).append(cls.code)
    return {status: " or ".join(sorted(names)) for status, names in codes.items()}


#: HTTP status -> the error codes answered with it
MEANINGS = _codes()


def _answer(status: int) -> dict[str, Any]:
    return {"description": MEANINGS[status], "content": {"application/json": {"schema": {
        "$ref": _REF.format(model="ErrorView")}}}}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses`` for refusals its shape does not imply."""
    return {status: {"model": ErrorView, "description": MEANINGS[status]} for status in statuses}


def refuses(*statuses: int) -> Callable[[F], F]:
    """Mark a dependency as one that may refuse with ``statuses``: each route using it declares them."""
    def mark(dependency: F) -> F:
        setattr(dependency, _MARK, statuses)
        return dependency
    return mark


def _called(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _called(sub)


def _by_dependencies(app: FastAPI) -> dict[tuple[str, str], set[int]]:
    """(path, method) -> what the dependencies of that operation declare with ``refuses``."""
    declared: dict[tuple[str, str], set[int]] = {}
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or route.path is None:
            continue
        statuses = {s for call in _called(route.dependant) for s in getattr(call, _MARK, ())}
        for method in route.methods or ():
            declared[(route.path, method.lower())] = statuses
    return declared


def _implied(method: str, operation: dict[str, Any]) -> set[int]:
    params = operation.get("parameters", [])
    takes_input = bool(params) or "requestBody" in operation
    statuses = set()
    if operation.get("security"):
        statuses |= {401, 429}
        if method in _WRITES and takes_input:
            statuses |= {403, 404, 409}
    if takes_input:
        statuses.add(422)
    if "requestBody" in operation:
        statuses.add(413)
    if any(p["in"] == "path" for p in params):
        statuses.add(404)
    return statuses


def declare_refusals(spec: dict[str, Any],
                     by_dependencies: Mapping[tuple[str, str], set[int]] | None = None) -> dict[str, Any]:
    """``spec`` with every operation's implied refusals declared, and those its dependencies declare
    (by path and method), in the API's error shape."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    error = ErrorView.model_json_schema(ref_template=_REF)
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorView"] = error
    for name in _FASTAPI_422:
        schemas.pop(name, None)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            responses.pop("422", None)  # FastAPI's; implied again below wherever it applies
            added = (by_dependencies or {}).get((path, method), set())
            for status in sorted(_implied(method, operation) | added):
                responses.setdefault(str(status), _answer(status))
            operation["responses"] = dict(sorted(responses.items()))
    return spec


class ApiApp(FastAPI):
    """The API's app: FastAPI, describing the refusals of its operations too."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = declare_refusals(super().openapi(), _by_dependencies(self))
        return self.openapi_schema
