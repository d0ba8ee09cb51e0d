from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class AuditEvent(Base):
    """Append-only: the application inserts rows and never updates them; old rows are deleted only by
    retention (``authserver audit purge``, ``AUTHSERVER_AUDIT_RETENTION_DAYS``)."""

    __tablename__ = "audit_events"

    # BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    # "success" or "failure" (a refused sign-in, a denied consent, a reused token…).
    outcome: Mapped[str] = mapped_column(String(16), default="success", server_default="success", index=True)
    # A user id, "cli", or an admin's user id for console changes.
    actor: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    client_id: Mapped[str | None] = mapped_column(String(2048), default=None, index=True)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
