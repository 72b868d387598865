"""images: the virtual size read from the file replaces the declared min_disk_gb; optional min_memory_mb

The virtual sizes of images uploaded before are read from their files at the frontend's next
start (``frontend/bootstrap.py``: ``recover``), which has the image store this cannot see.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 15:07:11.460077
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('virtual_size_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('min_memory_mb', sa.Integer(), nullable=True))
        batch_op.drop_column('min_disk_gb')


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('min_disk_gb', sa.INTEGER(), nullable=False, server_default='0'))
        batch_op.drop_column('min_memory_mb')
        batch_op.drop_column('virtual_size_bytes')
