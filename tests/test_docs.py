"""docs/api.md and docs/state.md are generated from the code: the committed pages must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from frontend.api import docgen as api_docgen
from frontend.db import docgen as state_docgen

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("generator, page", [(api_docgen, "docs/api.md"), (state_docgen, "docs/state.md")])
def test_committed_page_is_what_its_generator_prints(generator: ModuleType, page: str) -> None:
    # Run as a command, like the page is made, so that anything else it would print counts too.
    run = subprocess.run([sys.executable, "-m", generator.__name__], check=False, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    committed = (REPO / page).read_text() if (REPO / page).exists() else ""
    assert run.stdout == committed, f"{page} is out of date: run `{generator.COMMAND}`"


def test_every_route_is_in_the_api_page() -> None:
    # app.routes holds one opaque entry per included router; iter_route_contexts reaches their
    # endpoints, with the prefix they are served under.
    routes = [f"{method} {route.path}" for route in iter_route_contexts(api_docgen.app().routes)
              if isinstance(route.original_route, APIRoute) and route.include_in_schema
              for method in sorted(route.methods or ())]
    assert "POST /v1/tokens" in routes, "the app's routes were not found: this test would check nothing"
    page = (REPO / "docs/api.md").read_text()
    missing = [route for route in routes if f"`{route}`" not in page]
    assert not missing, f"docs/api.md lacks {missing}: run `{api_docgen.COMMAND}`"
