"""The database back end's table: one row per live counter or hold."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base


class LimitCounter(Base):
    """A counter (``hits`` in the window ending at ``expires_at``) or a hold (``hits`` = 1).

    Rows whose ``expires_at`` has passed mean nothing (every statement ignores them) and are
    removed by the purger.
    """

    __tablename__ = "limit_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(index=True)
