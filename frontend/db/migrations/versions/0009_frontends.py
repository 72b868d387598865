"""frontends: the registry of running frontend processes, and which one served each audited call

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 17:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('frontends',
    sa.Column('holder', sa.String(length=255), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('api_url', sa.String(length=255), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('holder', name=op.f('pk_frontends'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('frontend', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('frontend')
    op.drop_table('frontends')
