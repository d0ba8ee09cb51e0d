"""Authorization codes: 256-bit, stored hashed, short-lived, used once (atomically in SQL)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.db import affected, utcnow
from authserver.secrets import hash_secret, new_secret
from authserver.tokens.models import AuthorizationCode


@dataclass(frozen=True)
class CodeGrant:
    client_id: str
    user_id: uuid.UUID
    redirect_uri: str
    redirect_uri_given: bool
    code_challenge: str
    resource: str
    scopes: list[str]
    auth_time: datetime
    stay_connected: bool = False
    dpop_jkt: str | None = None  # RFC 9449 §10: the token request must prove this key
    amr: list[str] | None = None  # RFC 8176: how the person signed in


def create(session: Session, grant: CodeGrant, ttl: int) -> str:
    code = new_secret(32)
    now = utcnow()
    session.add(AuthorizationCode(
        code_hash=hash_secret(code), client_id=grant.client_id, user_id=grant.user_id,
        redirect_uri=grant.redirect_uri, redirect_uri_given=grant.redirect_uri_given,
        code_challenge=grant.code_challenge, resource=grant.resource, scopes=grant.scopes,
        stay_connected=grant.stay_connected, dpop_jkt=grant.dpop_jkt,
        auth_time=grant.auth_time, amr=grant.amr, created_at=now, expires_at=now + timedelta(seconds=ttl),
    ))
    return code


def find(session: Session, code: str) -> AuthorizationCode | None:
    if len(code) > 100:
        return None
    return session.scalar(select(AuthorizationCode).where(AuthorizationCode.code_hash == hash_secret(code)))


def consume(session: Session, row: AuthorizationCode, now: datetime) -> bool:
    """Mark the code used; True for exactly one caller across every node sharing the database."""
    result = session.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.code_hash == row.code_hash, AuthorizationCode.used_at.is_(None))
        .values(used_at=now)
    )
    return affected(result) == 1


def record_issued(session: Session, code_hash: str, access_jti: str, access_expires_at: datetime,
                  family_id: uuid.UUID | None) -> None:
    session.execute(update(AuthorizationCode).where(AuthorizationCode.code_hash == code_hash).values(
        access_jti=access_jti, access_expires_at=access_expires_at, family_id=family_id))


def issued_access_tokens(session: Session, user_id: uuid.UUID, client_id: str, resource: str,
                         now: datetime) -> list[tuple[str, datetime]]:
    """``(jti, expiry)`` of still-unexpired access tokens that codes of this grant were exchanged for.

    Used codes are kept an hour past their expiry (``purge.CODE_KEEP``), so this finds every
    token issued in the last hour, the recent ones a time-based cut-off cannot tell apart.
    """
    rows = session.execute(select(AuthorizationCode.access_jti, AuthorizationCode.access_expires_at).where(
        AuthorizationCode.user_id == user_id, AuthorizationCode.client_id == client_id,
        AuthorizationCode.resource == resource, AuthorizationCode.access_jti.is_not(None),
        AuthorizationCode.access_expires_at > now)).all()
    return [(jti, expires_at) for jti, expires_at in rows if jti and expires_at]
