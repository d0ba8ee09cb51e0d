from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class TotpFactor(Base):
    """A person's TOTP authenticator. The shared secret is AES-GCM encrypted under a key derived
    from AUTHSERVER_SECRET_KEY, bound to the user id (``mfa.totp``); ``last_step`` is the RFC 6238
    time step of the last accepted code: a code of that step or an earlier one is refused."""

    __tablename__ = "totp_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecoveryCode(Base):
    """One single-use recovery code; only its SHA-256 hash (salted with the user id) is kept."""

    __tablename__ = "recovery_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SecondStep(Base):
    """A password accepted, the second factor not yet: bound to the browser that typed the password
    (``browser_hash``), to the authorization request it belongs to (``request_hash``, none for the
    stand-alone sign-in page), short-lived, and with few tries. The browser holds the value in a
    cookie; only its hash is the key."""

    __tablename__ = "second_steps"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

