"""Create the queue of Slack summaries of runs started from a terminal.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('summary_posts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=255), nullable=True),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('message_ts', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', name='uq_summary_posts_run')
    )
    with op.batch_alter_table('summary_posts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_summary_posts_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('summary_posts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_summary_posts_status'))
    op.drop_table('summary_posts')
