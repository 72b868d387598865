"""volumes: a zone asked for and the device attached as; volume snapshots, with quotas

Volumes made before keep their hypervisor: they may hold data.  Only volumes made from now on
without an instance wait for their first attach to get one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 15:44:35.191750
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('snapshots',
    sa.Column('org_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('volume_id', sa.String(length=36), nullable=True),
    sa.Column('hypervisor_id', sa.String(length=36), nullable=False),
    sa.Column('size_gb', sa.Integer(), nullable=False),
    sa.Column('consistency', sa.String(length=24), nullable=True),
    sa.Column('fault', sa.Text(), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['hypervisor_id'], ['hypervisors.id'], name=op.f('fk_snapshots_hypervisor_id_hypervisors')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_snapshots_org_id_organizations')),
    sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], name=op.f('fk_snapshots_volume_id_volumes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_snapshots'))
    )
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshots_hypervisor_id'), ['hypervisor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_volume_id'), ['volume_id'], unique=False)

    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quota_snapshots', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('quota_snapshot_gb', sa.Integer(), nullable=True))

    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('zone_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('device', sa.String(length=16), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_volumes_zone_id_zones'), 'zones', ['zone_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_volumes_zone_id_zones'), type_='foreignkey')
        batch_op.drop_column('device')
        batch_op.drop_column('zone_id')

    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.drop_column('quota_snapshot_gb')
        batch_op.drop_column('quota_snapshots')

    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshots_volume_id'))
        batch_op.drop_index(batch_op.f('ix_snapshots_org_id'))
        batch_op.drop_index(batch_op.f('ix_snapshots_hypervisor_id'))

    op.drop_table('snapshots')
