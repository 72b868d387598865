"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from frontend.db import Database, upgrade
from frontend.db.models import Base


def test_migrations_match_the_models(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade(db)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"the models and the migrations differ; run python -m frontend.db.revise: {diff}"
        assert db.revision() is not None
        upgrade(db)  # a second start finds nothing to do
    finally:
        db.dispose()
