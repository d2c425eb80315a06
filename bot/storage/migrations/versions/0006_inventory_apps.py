"""Create the per-app row that serialises inventory syncs of one app.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 20:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inventory_apps',
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('app')
    )


def downgrade() -> None:
    op.drop_table('inventory_apps')
