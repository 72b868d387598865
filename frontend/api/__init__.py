"""The REST API (``/v1``), served by uvicorn: ``app.create_app`` builds it around a ``Frontend``.

Nothing is imported here, so that domain modules may use the API's schemas and lookups
(``schemas``, ``lookup``) without pulling in the app and, through it, the whole frontend.
"""
