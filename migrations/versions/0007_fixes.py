"""authorization requests: the address group that started each, and indexes to count pending ones

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 07:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('authorization_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ip_group', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_authorization_requests_browser_hash'), ['browser_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_authorization_requests_ip_group'), ['ip_group'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('authorization_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_authorization_requests_ip_group'))
        batch_op.drop_index(batch_op.f('ix_authorization_requests_browser_hash'))
        batch_op.drop_column('ip_group')
