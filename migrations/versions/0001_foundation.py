"""foundation: users, clients, scopes, resources, keys, audit

Revision ID: 0001
Revises:
Create Date: 2026-11-25 20:11:43.771540
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import authserver.db


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=True),
    sa.Column('client_id', sa.String(length=2048), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_event'), ['event'], unique=False)

    op.create_table('clients',
    sa.Column('client_id', sa.String(length=2048), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=True),
    sa.Column('token_endpoint_auth_method', sa.String(length=40), nullable=False),
    sa.Column('application_type', sa.String(length=16), nullable=False),
    sa.Column('redirect_uris', sa.JSON(), nullable=False),
    sa.Column('grant_types', sa.JSON(), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('resources', sa.JSON(), nullable=False),
    sa.Column('default_scopes', sa.JSON(), nullable=False),
    sa.Column('can_introspect', sa.Boolean(), nullable=False),
    sa.Column('verified', sa.Boolean(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('registration_token_hash', sa.String(length=64), nullable=True),
    sa.Column('extra_metadata', sa.JSON(), nullable=False),
    sa.Column('created_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', authserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_clients'))
    )
    op.create_table('resources',
    sa.Column('uri', sa.String(length=2048), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('uri', name=op.f('pk_resources'))
    )
    op.create_table('scopes',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('write', sa.Boolean(), nullable=False),
    sa.Column('public', sa.Boolean(), nullable=False),
    sa.Column('created_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scopes'))
    )
    op.create_table('signing_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('alg', sa.String(length=16), nullable=False),
    sa.Column('private_key_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('public_jwk', sa.JSON(), nullable=False),
    sa.Column('created_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('retired_at', authserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('publish_until', authserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_signing_keys'))
    )
    op.create_table('users',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('username', sa.String(length=150), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', authserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )


def downgrade() -> None:
    op.drop_table('users')
    op.drop_table('signing_keys')
    op.drop_table('scopes')
    op.drop_table('resources')
    op.drop_table('clients')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_event'))
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))

    op.drop_table('audit_events')
