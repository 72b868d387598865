"""Imports inside ``frontend/`` flow one way: the parts (metrics, hosts, workflows, the task
engine...) are handed the narrow things they use, and only what assembles them (``services``,
the daemon, the API) knows ``Frontend``.  A part importing ``services`` back, even for types
only, is the circle issue 15 ended."""

from __future__ import annotations

import ast
from pathlib import Path

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
#: modules that assemble the parts, or serve them over HTTP
ASSEMBLERS = {"services.py", "daemon.py", "election.py"}


def _imports_services(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "services" or n.endswith(".services") or n.startswith("services.") for n in names):
                return True
        if isinstance(node, ast.ImportFrom) and node.module is None and any(a.name == "services" for a in node.names):
            return True
    return False


def test_no_part_of_the_frontend_imports_services_back() -> None:
    offenders = [str(p.relative_to(FRONTEND)) for p in sorted(FRONTEND.rglob("*.py"))
                 if p.name not in ASSEMBLERS and p.parent.name != "api" and p.parent.parent.name != "api"
                 and _imports_services(p)]
    assert offenders == []
