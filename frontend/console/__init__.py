"""The web console: tenants' pages, served by the frontend under ``/ui`` (see docs/console.md)."""

from ._images import UPLOAD
from ._pages import PAGE_SIZE, create_console
from ._session import PATH

__all__ = ["PAGE_SIZE", "PATH", "UPLOAD", "create_console"]
