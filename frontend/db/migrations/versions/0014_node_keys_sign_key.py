"""node_keys.sign_key: the Ed25519 key each node signs its route claims with, from its first JOIN

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 18:01:57.696580
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('node_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sign_key', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('node_keys', schema=None) as batch_op:
        batch_op.drop_column('sign_key')
