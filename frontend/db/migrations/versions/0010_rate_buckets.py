"""rate_buckets: the API's rate limits where every frontend sees them

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 17:30:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # UNLOGGED on PostgreSQL (see the model): no WAL, no disk wait per take; SQLite has no such thing.
    unlogged = ['UNLOGGED'] if op.get_context().dialect.name == 'postgresql' else []
    op.create_table('rate_buckets',
    sa.Column('limiter', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('full_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('limiter', 'key', name=op.f('pk_rate_buckets')),
    prefixes=unlogged
    )


def downgrade() -> None:
    op.drop_table('rate_buckets')
