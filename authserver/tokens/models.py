from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, LargeBinary, String, Text, Uuid
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class AuthorizationCode(Base):
    """A one-time code (hash only), bound to everything the token request must repeat."""

    __tablename__ = "authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    redirect_uri_given: Mapped[bool] = mapped_column(default=True)
    code_challenge: Mapped[str] = mapped_column(String(128))
    resource: Mapped[str] = mapped_column(String(2048))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The person left "Stay connected" ticked: the exchange may start a refresh family.
    stay_connected: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    auth_time: Mapped[datetime]
    amr: Mapped[list[str] | None] = mapped_column(JSON, default=None)  # RFC 8176, from the sign-in
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    # What the exchange issued, so a replayed code can take it all back.
    access_jti: Mapped[str | None] = mapped_column(String(64), default=None)
    access_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    family_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    # RFC 9449 §10: the authorization request's dpop_jkt; the token request must prove this key.
    dpop_jkt: Mapped[str | None] = mapped_column(String(43), default=None)


class RefreshToken(Base):
    """One member of a refresh-token family; each use rotates to a successor."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    resource: Mapped[str] = mapped_column(String(2048))
    auth_time: Mapped[datetime | None] = mapped_column(default=None)
    amr: Mapped[list[str] | None] = mapped_column(JSON, default=None)  # inherited along the family
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)  # idle limit
    family_expires_at: Mapped[datetime]  # absolute limit, inherited along the family
    rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # The access token issued with this refresh token (deny-listed if the family dies).
    access_jti: Mapped[str | None] = mapped_column(String(64), default=None)
    access_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # For the benign-race grace window only: the successor token response, encrypted.
    successor_response: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # RFC 9449 §5: a public client's family is bound to the DPoP key (RFC 7638 thumbprint) that
    # started it; every refresh must prove that key. Inherited along the family, never changed.
    dpop_jkt: Mapped[str | None] = mapped_column(String(43), default=None)


class RevokedAccessToken(Base):
    """Deny list of access-token ``jti`` values, kept until the token would expire anyway."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
