"""structlog set-up: one JSON object per line, one event name per thing that happened."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["setup_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level: str = "info", service: str | None = None, stream: object = None) -> None:
    """Route structlog to ``stream`` (stderr by default) as JSON lines at ``level`` and above."""
    if level not in _LEVELS:
        raise ValueError(f"log_level: must be one of {', '.join(_LEVELS)} (got {level!r})")
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        processors.append(lambda _l, _m, event: {"service": service, **event})
    processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
