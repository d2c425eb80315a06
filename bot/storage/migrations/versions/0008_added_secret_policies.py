"""Add the policy chosen for an added secret and the backup version an unset keeps.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('run_secrets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('value_source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('backup_version', sa.Integer(), nullable=True))
    with op.batch_alter_table('inventory', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('value_source', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('inventory', schema=None) as batch_op:
        batch_op.drop_column('value_source')
        batch_op.drop_column('priority')
    with op.batch_alter_table('run_secrets', schema=None) as batch_op:
        batch_op.drop_column('backup_version')
        batch_op.drop_column('value_source')
        batch_op.drop_column('priority')
