"""security group rules: ICMP type and code; the protocol may be an IP protocol number

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:05:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('security_group_rules', schema=None) as batch_op:
        batch_op.add_column(sa.Column('icmp_type', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('icmp_code', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('security_group_rules', schema=None) as batch_op:
        batch_op.drop_column('icmp_code')
        batch_op.drop_column('icmp_type')
