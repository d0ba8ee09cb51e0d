"""DPoP (RFC 9449): per-client dpop_bound_access_tokens; key thumbprints on authorization
requests, codes (dpop_jkt, §10) and refresh tokens (public clients' families, §5)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_bound_access_tokens', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))

    with op.batch_alter_table('authorization_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=43), nullable=True))

    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=43), nullable=True))

    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=43), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')

    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')

    with op.batch_alter_table('authorization_requests', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('dpop_bound_access_tokens')
