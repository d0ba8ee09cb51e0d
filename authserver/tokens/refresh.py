"""Refresh tokens: opaque 256-bit values, stored hashed, one family per grant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from authserver.db import affected
from authserver.secrets import hash_secret, new_secret
from authserver.tokens.models import RefreshToken, RevokedAccessToken


@dataclass(frozen=True)
class RefreshGrant:
    family_id: uuid.UUID
    client_id: str
    user_id: uuid.UUID | None
    scopes: list[str]
    resource: str
    auth_time: datetime | None
    family_expires_at: datetime


def new_row(grant: RefreshGrant, *, now: datetime, idle_ttl: int, access_jti: str,
            access_expires_at: datetime) -> tuple[str, dict[str, Any]]:
    """A new member of ``grant``'s family: its token, and the column values of its row (not stored yet)."""
    token = new_secret(32)
    return token, {
        "token_hash": hash_secret(token), "family_id": grant.family_id, "client_id": grant.client_id,
        "user_id": grant.user_id, "scopes": grant.scopes, "resource": grant.resource, "auth_time": grant.auth_time,
        "created_at": now, "expires_at": min(now + timedelta(seconds=idle_ttl), grant.family_expires_at),
        "family_expires_at": grant.family_expires_at, "access_jti": access_jti,
        "access_expires_at": access_expires_at,
    }


def create(session: Session, grant: RefreshGrant, *, now: datetime, idle_ttl: int, access_jti: str,
           access_expires_at: datetime) -> str:
    token, row = new_row(grant, now=now, idle_ttl=idle_ttl, access_jti=access_jti,
                         access_expires_at=access_expires_at)
    session.add(RefreshToken(**row))
    return token


def find(session: Session, token: str) -> RefreshToken | None:
    if len(token) > 100:
        return None
    return session.scalar(select(RefreshToken).where(RefreshToken.token_hash == hash_secret(token)))


def deny_access_token(session: Session, jti: str, expires_at: datetime, now: datetime) -> None:
    """Deny-list a jti; idempotent, and safe when two revocations race (ON CONFLICT DO NOTHING)."""
    if expires_at <= now:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(RevokedAccessToken).values(jti=jti, expires_at=expires_at)
                    .on_conflict_do_nothing(index_elements=["jti"]))


def revoke_family(session: Session, family_id: uuid.UUID, now: datetime) -> int:
    """Revoke every member of a family and deny-list the access tokens they issued.

    The UPDATE is repeated until it touches nothing: on PostgreSQL a rotation that was
    in flight commits a successor the first statement could not see (READ COMMITTED
    re-evaluates only the rows it found), and each new statement sees it.
    """
    while affected(session.execute(update(RefreshToken).where(RefreshToken.family_id == family_id,
                                                     RefreshToken.revoked_at.is_(None))
                          .values(revoked_at=now))):
        pass
    members = list(session.execute(select(RefreshToken.access_jti, RefreshToken.access_expires_at)
                                   .where(RefreshToken.family_id == family_id)))
    for jti, expires_at in members:
        if jti and expires_at:
            deny_access_token(session, jti, expires_at, now)
    return len(members)


def live(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """The conditions of a refresh token that can still be used: what makes a grant "live"."""
    return (RefreshToken.revoked_at.is_(None), RefreshToken.rotated_at.is_(None), RefreshToken.expires_at > now,
            RefreshToken.family_expires_at > now)
