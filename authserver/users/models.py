from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, String, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow

# admin: the console and every change; auditor: the console read-only; user: their own account only.
ROLES = ("admin", "auditor", "user")


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    disabled: Mapped[bool] = mapped_column(default=False)
    # Signed in with a one-time password (the first admin's, a generated or an admin's reset one):
    # every page sends them to /account/password until they choose their own (account.password).
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def may_read_console(self) -> bool:
        return "admin" in self.roles or "auditor" in self.roles
