"""Login sessions: created on sign-in, looked up by the hash of the cookie value."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from authserver.db import affected, utcnow
from authserver.interaction.models import LoginSession
from authserver.secrets import hash_secret, new_secret
from authserver.users.models import User


def start(session: Session, user: User, ttl: int, ip: str | None,
          amr: list[str] | None = None) -> tuple[str, LoginSession]:
    """``amr``: RFC 8176 methods of this sign-in; a password alone unless told otherwise."""
    value = new_secret(32)
    now = utcnow()
    row = LoginSession(id_hash=hash_secret(value), user_id=user.id, auth_time=now, amr=amr or ["pwd"],
                       expires_at=now + timedelta(seconds=ttl), ip=ip)
    session.add(row)
    return value, row


def current(session: Session, value: str | None, now: datetime | None = None) -> tuple[LoginSession, User] | None:
    if not value or len(value) > 100:
        return None
    now = now or utcnow()
    row = session.execute(
        select(LoginSession, User).join(User, User.id == LoginSession.user_id)
        .where(LoginSession.id_hash == hash_secret(value), LoginSession.expires_at > now, User.disabled.is_(False))
    ).first()
    return (row[0], row[1]) if row else None


def end(session: Session, value: str) -> None:
    session.execute(delete(LoginSession).where(LoginSession.id_hash == hash_secret(value)))


def end_others(session: Session, user_id: uuid.UUID, keep_value: str) -> int:
    """End every session of the person but the one whose cookie is ``keep_value``; how many ended."""
    return affected(session.execute(delete(LoginSession).where(
        LoginSession.user_id == user_id, LoginSession.id_hash != hash_secret(keep_value))))


def end_all(session: Session, user_id: uuid.UUID) -> int:
    """Sign a person out everywhere (disabled, or their password was reset); how many sessions ended."""
    return affected(session.execute(delete(LoginSession).where(LoginSession.user_id == user_id)))
