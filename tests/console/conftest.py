"""The app over a module's in-process cloud, for the console's browserless tests."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from frontend.api.app import create_app
from tests.api.cloud import Cloud


@pytest.fixture(scope="module")
def app(cloud: Cloud) -> FastAPI:
    """The frontend's app, console and all, over the module's own ``cloud``."""
    return create_app(cloud.frontend)
