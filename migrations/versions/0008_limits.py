"""abuse limit counters shared by every node (registration, sign-in, metadata fetches, token rate)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import authserver.db


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('limit_counters',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('expires_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_limit_counters'))
    )
    with op.batch_alter_table('limit_counters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_limit_counters_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('limit_counters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_limit_counters_expires_at'))
    op.drop_table('limit_counters')
