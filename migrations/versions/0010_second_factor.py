"""the second factor: TOTP authenticators (secret encrypted), recovery codes (hashes), the sign-in's
second step, and the RFC 8176 amr of each sign-in carried to its codes and refresh tokens

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import authserver.db


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

AMR_TABLES = ('login_sessions', 'authorization_requests', 'authorization_codes', 'refresh_tokens')


def upgrade() -> None:
    op.create_table('totp_factors',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('secret_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('confirmed_at', authserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_step', sa.BigInteger(), nullable=False),
    sa.Column('created_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_totp_factors_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_totp_factors'))
    )
    op.create_table('recovery_codes',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('used_at', authserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_recovery_codes_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_hash', name=op.f('pk_recovery_codes'))
    )
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recovery_codes_user_id'), ['user_id'], unique=False)
    op.create_table('second_steps',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('browser_hash', sa.String(length=64), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_second_steps_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_second_steps'))
    )
    with op.batch_alter_table('second_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_second_steps_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_second_steps_user_id'), ['user_id'], unique=False)
    for table in AMR_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('amr', sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in AMR_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('amr')
    with op.batch_alter_table('second_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_second_steps_user_id'))
        batch_op.drop_index(batch_op.f('ix_second_steps_expires_at'))
    op.drop_table('second_steps')
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recovery_codes_user_id'))
    op.drop_table('recovery_codes')
    op.drop_table('totp_factors')
