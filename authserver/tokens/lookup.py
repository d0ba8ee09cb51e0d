"""Finding out what a presented token is: shared by revocation and introspection."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from authserver.clients.models import Client
from authserver.interaction.models import Consent
from authserver.services import Services
from authserver.tokens import refresh
from authserver.tokens.access import AccessTokenInfo, decode_access_token
from authserver.tokens.models import RefreshToken, RevokedAccessToken
from authserver.users.models import User

ONE_SECOND = timedelta(seconds=1)  # the resolution of ``iat``


@dataclass(frozen=True)
class RefreshTokenInfo:
    row: RefreshToken
    username: str | None

    def active(self, now: datetime) -> bool:
        r = self.row
        return r.revoked_at is None and r.rotated_at is None and r.expires_at > now and r.family_expires_at > now


def access_token(session: Session, services: Services, token: str) -> AccessTokenInfo | None:
    """A valid, unexpired access token we signed, with whether it was taken back, in one round trip.

    Taken back: its ``jti`` is deny-listed; its client is disabled or gone; its person is
    disabled; or the person disconnected the app (the grant's ``tokens_revoked_at`` is after
    the whole second of the token's ``iat``). Each of these holds at once on every node.

    ``iat`` has whole seconds, so a token issued in the very second of the disconnect may be
    older or newer than it: the cut-off leaves it alone (a new consent's first token must
    work), and ``grants.disconnect`` deny-lists the old ones of that second by ``jti``.
    """
    claims = decode_access_token(services.keys, token, issuer=services.settings.issuer)
    if claims is None:
        return None
    try:
        user_id: uuid.UUID | None = uuid.UUID(claims["sub"])
    except ValueError:
        user_id = None  # client_credentials tokens have the client as subject
    revoked = exists().where(RevokedAccessToken.jti == claims["jti"])
    client_usable = exists().where(Client.client_id == claims["client_id"], Client.disabled.is_(False))
    columns = [revoked.label("revoked"), client_usable.label("client_usable")]
    if user_id is not None:
        issued_at = datetime.fromtimestamp(int(claims["iat"]), UTC)
        columns += [
            exists().where(User.id == user_id, User.disabled.is_(True)).label("user_disabled"),
            exists().where(Consent.user_id == user_id, Consent.client_id == claims["client_id"],
                           Consent.resource == claims["aud"], Consent.tokens_revoked_at >= issued_at + ONE_SECOND)
            .label("disconnected"),
            select(User.username).where(User.id == user_id).scalar_subquery().label("username"),
        ]
    row = session.execute(select(*columns)).one()._mapping
    taken_back = bool(row["revoked"]) or not row["client_usable"] or bool(row.get("user_disabled")) \
        or bool(row.get("disconnected"))
    return AccessTokenInfo(claims, taken_back, row.get("username"))


async def cached_access_token(services: Services, token: str) -> AccessTokenInfo | None:
    """``access_token`` answered from the verdict cache: each distinct token is verified and
    looked up at most once per cache period (see ``readcache``). Only tokens we signed are
    kept, keyed by the token's SHA-256; an entry past the token's ``exp`` is not used."""
    info = await services.verdicts.fetch(hashlib.sha256(token.encode()).digest(),
                                         lambda: _read_access_token(services, token), _is_ours)
    return info if info is not None and info.claims["exp"] > time.time() else None


def _is_ours(info: AccessTokenInfo | None) -> bool:
    return info is not None


def _read_access_token(services: Services, token: str) -> AccessTokenInfo | None:
    with services.db.read_session() as session:
        return access_token(session, services, token)


def refresh_token(session: Session, token: str) -> RefreshTokenInfo | None:
    row = refresh.find(session, token)
    if row is None:
        return None
    username = session.scalar(select(User.username).where(User.id == row.user_id)) if row.user_id else None
    return RefreshTokenInfo(row, username)

