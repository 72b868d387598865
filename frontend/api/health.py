"""Probes and metrics for operators and their tools, outside ``/v1`` and without a token.

``/healthz`` says the process serves; ``/readyz`` that it can do its job (the database
answers, the tree's root runs) and whether it leads, under which generation; ``/metrics`` is Prometheus' text format.  They reveal no
tenant data; keep the API's address (or a proxy in front) away from untrusted networks.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from .deps import FrontendDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the frontend process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers and the tree's root runs (503 otherwise)",
            responses={503: {"description": "not ready; the body says which check failed"}})
def readyz(frontend: FrontendDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        frontend.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    tree = frontend.tree
    checks["tree"] = "ok" if tree is not None and tree.running else "not running"
    ready = all(v == "ok" for v in checks.values())
    leader = {"leading": frontend.generation is not None, "generation": frontend.generation}
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks, "leader": leader},
                        status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics of the frontend, the tree and the cloud",
            response_class=Response)
async def metrics(frontend: FrontendDep) -> Response:
    # Collecting reads the database and queries the tree: off the event loop.
    body = await anyio.to_thread.run_sync(frontend.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
