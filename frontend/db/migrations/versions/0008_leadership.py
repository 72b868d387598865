"""leadership: the lease that says which frontend leads

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 13:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('leadership',
    sa.Column('name', sa.String(length=16), nullable=False),
    sa.Column('holder', sa.String(length=255), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_leadership'))
    )


def downgrade() -> None:
    op.drop_table('leadership')
