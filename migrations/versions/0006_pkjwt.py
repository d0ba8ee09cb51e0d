"""private_key_jwt client keys and per-client IP allow-lists

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 07:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('jwks', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('jwks_uri', sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column('token_endpoint_auth_signing_alg', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('allowed_ips', sa.JSON(), server_default='[]', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('allowed_ips')
        batch_op.drop_column('token_endpoint_auth_signing_alg')
        batch_op.drop_column('jwks_uri')
        batch_op.drop_column('jwks')
