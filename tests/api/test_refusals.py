"""The OpenAPI description declares every refusal in the shape the API answers with.

``test_fuzz_api.py`` holds the answers to the description; this checks the description itself,
quickly: FastAPI's own 422 shape (``{"detail": [...]}``), which the API never answers with, is
gone, and each operation declares the refusals its shape implies.
"""

from __future__ import annotations

from typing import Any, Iterator, cast

from frontend.api.app import create_app
from frontend.api.refusals import MEANINGS
from frontend.services import Frontend

SPEC = create_app(cast(Frontend, None)).openapi()
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
    assert _declared("get", "/v1/networks") == [401, 429]
    assert _declared("get", "/v1/networks/{network}") == [401, 404, 409, 422, 429]  # 409: two shared, one name
    assert _declared("post", "/v1/networks") == [401, 403, 404, 409, 413, 422, 429]
    assert _declared("delete", "/v1/networks/{network}") == [401, 403, 404, 409, 422, 429]
    assert _declared("post", "/v1/tokens") == [401, 413, 422, 429]
    assert _declared("get", "/v1/instances/{instance}/console") == [401, 404, 409, 422, 429, 503]
    assert _declared("get", "/healthz") == []
