"""Finding out what a presented token is: shared by revocation and introspection."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from authserver.services import Services
from authserver.tokens import refresh
from authserver.tokens.access import decode_access_token
from authserver.tokens.models import RefreshToken, RevokedAccessToken
from authserver.users.models import User


@dataclass(frozen=True)
class AccessTokenInfo:
    claims: dict[str, Any]
    revoked: bool
    username: str | None


@dataclass(frozen=True)
class RefreshTokenInfo:
    row: RefreshToken
    username: str | None

    def active(self, now: datetime) -> bool:
        r = self.row
        return r.revoked_at is None and r.rotated_at is None and r.expires_at > now and r.family_expires_at > now


def access_token(session: Session, services: Services, token: str) -> AccessTokenInfo | None:
    """A valid, unexpired access token we signed, with its deny-list state, in one round trip."""
    claims = decode_access_token(services.keys, token, issuer=services.settings.issuer)
    if claims is None:
        return None
    revoked = exists().where(RevokedAccessToken.jti == claims["jti"])
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError:
        user_id = None  # client_credentials tokens have the client as subject
    row = session.execute(select(revoked.label("revoked"), select(User.username).where(User.id == user_id)
                                 .scalar_subquery().label("username"))).one()
    return AccessTokenInfo(claims, bool(row.revoked), row.username)


def refresh_token(session: Session, token: str) -> RefreshTokenInfo | None:
    row = refresh.find(session, token)
    if row is None:
        return None
    username = session.scalar(select(User.username).where(User.id == row.user_id)) if row.user_id else None
    return RefreshTokenInfo(row, username)

