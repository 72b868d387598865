"""The REST API (``/v1``), served by uvicorn.  ``create_app`` builds it around a ``Frontend``."""

from .app import create_app

__all__ = ["create_app"]
