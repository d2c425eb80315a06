"""Create the claims of rotations the bot opens by itself for `auto_rotate` secrets.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('auto_rotations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('due_at', sa.String(length=40), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('app', 'name', 'due_at', name='uq_auto_rotations_app_name_due')
    )


def downgrade() -> None:
    op.drop_table('auto_rotations')
