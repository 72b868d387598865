"""subnets: allocation pools, the ranges ports and floating IPs take their addresses from

Existing subnets get NULL, which means the default pools (every host address but the gateway):
what they allocated from before, so nothing changes for them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 00:50:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subnets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allocation_pools', sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subnets', schema=None) as batch_op:
        batch_op.drop_column('allocation_pools')
