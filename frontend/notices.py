"""The root's notice handler: what hosts say without being asked, each topic to its handler.

Handlers take ``(host, body)``; a body one cannot read (``KeyError``, ``TypeError`` or
``ValueError``) is logged and dropped, and the next notice is handled as usual.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import structlog

__all__ = ["NoticeHandler", "NoticeRouter"]

log = structlog.get_logger("frontend.notices")

NoticeHandler = Callable[[str, Any], None]


class NoticeRouter:
    """``TreeRoot.notice_handler``: called in order, on the root's notice thread."""

    def __init__(self, handlers: Mapping[str, NoticeHandler]) -> None:
        self._handlers = dict(handlers)

    def __call__(self, host: str, topic: str, body: Any) -> None:
        handler = self._handlers.get(topic)
        if handler is None:
            log.info("notice_ignored", host=host, topic=topic, reason="no such notice")
            return
        try:
            handler(host, body)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("notice_refused", host=host, topic=topic, reason=str(exc)[:200])
