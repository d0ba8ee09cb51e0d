from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    # AES-256-GCM: nonce || ciphertext of the PKCS#8 PEM, bound to `kid` as associated data.
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when a newer key takes over signing; the key stays published until `publish_until`.
    retired_at: Mapped[datetime | None] = mapped_column(default=None)
    publish_until: Mapped[datetime | None] = mapped_column(default=None)
