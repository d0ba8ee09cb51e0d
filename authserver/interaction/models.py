from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint, Uuid
from sqlalchemy import true as sa_true
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class LoginSession(Base):
    """A signed-in browser. The cookie holds a 256-bit value; only its hash is stored."""

    __tablename__ = "login_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    auth_time: Mapped[datetime] = mapped_column(default=utcnow)
    # RFC 8176 methods of this sign-in (["pwd"], ["pwd", "otp", "mfa"], …); None: before migration 0010.
    amr: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)


class AuthorizationRequest(Base):
    """One /authorize call on its way to a code: created → authenticated → consented → done.

    The browser holds only an opaque id (its hash is the key) and is bound to the
    request by a cookie whose hash is ``browser_hash``.
    """

    __tablename__ = "authorization_requests"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    redirect_uri_given: Mapped[bool] = mapped_column(default=True)
    state: Mapped[str | None] = mapped_column(Text, default=None)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    resource: Mapped[str] = mapped_column(String(2048))
    code_challenge: Mapped[str] = mapped_column(String(128))
    # RFC 9449 §10: the code will be bound to this DPoP key thumbprint.
    dpop_jkt: Mapped[str | None] = mapped_column(String(43), default=None)
    prompt: Mapped[str | None] = mapped_column(String(64), default=None)
    browser_hash: Mapped[str] = mapped_column(String(64), index=True)
    # The client address group (net.address_group) that started it: pending requests are bounded
    # per browser and per address (interaction.flow.start).
    ip_group: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    status: Mapped[str] = mapped_column(String(16), default="created")
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    auth_time: Mapped[datetime | None] = mapped_column(default=None)
    amr: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Consent(Base):
    """What a person has allowed one client to do at one resource (remembered consent)."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_id", "client_id", "resource"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), index=True)
    resource: Mapped[str] = mapped_column(String(2048))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # "Stay connected" on the consent page: refresh tokens unless the person unticked it. The
    # choice is honoured on later silent authorizations.
    stay_connected: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    # Disconnect (on /account) forgets the scopes and sets this: access tokens of this grant
    # issued at or before it are inactive at introspection.
    tokens_revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
