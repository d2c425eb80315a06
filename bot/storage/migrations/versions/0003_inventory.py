"""Create the inventory of secrets on Fly and the ledger of daily reminders.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inventory',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('digest', sa.String(length=128), nullable=True),
    sa.Column('fly_status', sa.String(length=32), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rotation_source', sa.String(length=16), nullable=False),
    sa.Column('last_run_id', sa.String(length=32), nullable=True),
    sa.Column('changed_outside_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('snoozed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('snoozed_by', sa.String(length=64), nullable=True),
    sa.Column('snooze_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('app', 'name', name='uq_inventory_app_name')
    )
    op.create_table('reminder_posts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('local_date', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('message_ts', sa.String(length=32), nullable=True),
    sa.Column('items', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('channel', 'local_date', name='uq_reminder_posts_channel_date')
    )
    # The history of one secret is read newest first from the audit log.
    op.create_index('ix_audit_log_app_secret', 'audit_log', ['app', 'secret', 'id'])


def downgrade() -> None:
    op.drop_index('ix_audit_log_app_secret', table_name='audit_log')
    op.drop_table('reminder_posts')
    op.drop_table('inventory')
