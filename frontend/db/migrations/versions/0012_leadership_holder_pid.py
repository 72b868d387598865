"""leadership: the holder's database session, so a dead leader is replaced without waiting out its lease

Existing rows get NULL: no session to look for, so the lease runs out as before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 07:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('leadership', schema=None) as batch_op:
        batch_op.add_column(sa.Column('holder_pid', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('leadership', schema=None) as batch_op:
        batch_op.drop_column('holder_pid')
