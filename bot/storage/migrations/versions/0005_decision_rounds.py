"""Let a step take more than one decision, one per round (a second approval), and keep
the per-app change lock in the database.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 20:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('app_locks',
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('app')
    )
    # SQLite cannot change a constraint in place, so the batch copies the table.
    with op.batch_alter_table('decisions', recreate='always') as batch:
        batch.add_column(sa.Column('round', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch.drop_constraint('uq_decisions_run_position', type_='unique')
        batch.create_unique_constraint('uq_decisions_run_position_round', ['run_id', 'position', 'round'])


def downgrade() -> None:
    op.drop_table('app_locks')
    with op.batch_alter_table('decisions', recreate='always') as batch:
        batch.drop_constraint('uq_decisions_run_position_round', type_='unique')
        batch.drop_column('round')
        batch.create_unique_constraint('uq_decisions_run_position', ['run_id', 'position'])
