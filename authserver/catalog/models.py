from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class Scope(Base):
    __tablename__ = "scopes"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Shown on the consent page as the plain-words answer to "what will this app do?".
    description: Mapped[str] = mapped_column(Text)
    write: Mapped[bool] = mapped_column(default=False)
    # Listed in scopes_supported; a non-public scope is still grantable when allowed.
    public: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Resource(Base):
    """A protected resource (an MCP server), named by its canonical URI (RFC 8707)."""

    __tablename__ = "resources"

    uri: Mapped[str] = mapped_column(String(2048), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
