"""The database back end: counters in ``limit_counters``, shared by every node on the database.

Each operation is one statement in a short transaction of its own (never the caller's: a limit
counted must stay counted when the request then fails, and on SQLite a caller's write
transaction must not wait on a second connection of its own thread). A hit is an upsert whose
``ON CONFLICT`` branch restarts an expired window or adds to a live one, and ``RETURNING`` gives
the count after it, so concurrent hits on one key from many nodes are serialised by the row and
none is lost. SQLite has had ``ON CONFLICT DO UPDATE … RETURNING`` since 3.35 (2021).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from authserver.db import Database, affected, utcnow
from authserver.limits import NONE, Count, Limiter
from authserver.limits.models import LimitCounter

TABLE = cast(Table, LimitCounter.__table__)
C = TABLE.c


class DatabaseLimiter(Limiter):
    name = "database"

    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert: Any = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert

    def hit(self, key: str, window: float, cost: int = 1, *, extend: bool = False) -> Count:
        now = utcnow()
        fresh = now + timedelta(seconds=window)
        expired = C.expires_at <= now
        statement = self._insert(TABLE).values(key=key, hits=cost, expires_at=fresh)
        statement = statement.on_conflict_do_update(index_elements=[C.key], set_={
            "hits": case((expired, cost), else_=C.hits + cost),
            "expires_at": fresh if extend else case((expired, fresh), else_=C.expires_at),
        }).returning(C.hits, C.expires_at)
        with self._db.session() as session:
            hits, expires_at = session.execute(statement).one()
        return Count.of(hits, _seconds(expires_at, now))

    def peek(self, key: str) -> Count:
        now = utcnow()
        with self._db.read_session() as session:
            row = session.execute(select(C.hits, C.expires_at).where(C.key == key, C.expires_at > now)).first()
        return Count.of(row[0], _seconds(row[1], now)) if row else NONE

    def acquire(self, key: str, seconds: float) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=seconds)
        statement = self._insert(TABLE).values(key=key, hits=1, expires_at=until)
        statement = statement.on_conflict_do_update(index_elements=[C.key], set_={"hits": 1, "expires_at": until},
                                                    where=C.expires_at <= now).returning(C.key)
        with self._db.session() as session:
            return session.execute(statement).first() is not None

    def reset(self, *keys: str) -> None:
        if keys:
            with self._db.session() as session:
                session.execute(delete(TABLE).where(C.key.in_(keys)))


def _seconds(expires_at: datetime, now: datetime) -> float:
    return (expires_at - now).total_seconds()


def purge(session: Any, now: datetime) -> int:
    """Expired counters and holds (run by ``tokens.purge``)."""
    return affected(session.execute(delete(TABLE).where(C.expires_at < now)))
