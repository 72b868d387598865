"""Alembic environment: migrations run on the connection ``frontend.db.upgrade`` hands over."""

from alembic import context

from frontend.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through frontend.db.upgrade(), which passes a connection")

context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
