"""Engine, sessions and the declarative base shared by every domain.

Storage is synchronous SQLAlchemy. Decision: routes that touch the database are
plain ``def`` functions, which Starlette runs in its threadpool, so the event loop
never blocks on I/O. One code path serves SQLite (stdlib driver) and PostgreSQL
(psycopg 3); the hot paths (token, introspection) need one round trip, and the
JWKS and signing key are served from memory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ClauseElement, Connection, CursorResult, DateTime, Engine, MetaData, Result, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session, SessionTransaction, sessionmaker
from sqlalchemy.types import TypeDecorator

READONLY = "authserver_readonly"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite drops the offset; it is re-attached on read so comparisons with
    ``datetime.now(UTC)`` never mix naive and aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def affected(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched: how one-time use is decided (``rowcount == 1``)."""
    return cast(CursorResult[Any], result).rowcount


def utcnow() -> datetime:
    return datetime.now(UTC)


class DriverStatement:
    """A Core statement returning rows (a SELECT, or DML with RETURNING) that a PostgreSQL hot path
    runs on the psycopg cursor itself.

    For a one-row statement, SQLAlchemy's execution layer (compiled-cache lookup, execution
    context, type processing of every parameter and column) costs more CPU than psycopg's own
    work: ~130 of the ~200 µs a refresh token's read took. The statement is still written in Core
    and compiled by SQLAlchemy, once, for the connection's dialect. So parameters must be values
    psycopg adapts by itself (str, int, bool, bytes, UUID, timezone-aware datetimes, psycopg's
    ``Json`` for JSON columns), and rows come back as psycopg makes them (JSON parsed, timestamps
    aware). The connection's SQLAlchemy transaction state is not involved: use it in autocommit.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._sql: str | None = None

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if self._sql is None:
            self._sql = str(self.statement.compile(dialect=conn.dialect))
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute(self._sql, params)
            # (Not cursor.description: psycopg builds it, column by column, on every access.)
            return cursor.fetchall()


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # BEGIN IMMEDIATE: a transaction that reads and then writes (code exchange, refresh
        # rotation) would otherwise fail with SQLITE_BUSY when another writer committed in
        # between, instead of waiting. SQLite serialises writers anyway; units of work are short.
        # Read-only sessions (see Database.read_session) begin deferred and never wait on writers.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # A connection PostgreSQL, a pooler or a firewall dropped would fail a request (a revocation a
    # client never retries); pool_pre_ping would cost every checkout a round trip. So only a
    # connection that sat idle for a while is pinged on checkout (see _ping_if_idle).
    kwargs.setdefault("pool_recycle", 1800)
    # Keep as many connections as the threadpool can use at once (anyio's default limiter: 40 threads).
    # SQLAlchemy's default keeps 5 and closes every overflow connection on return, so under load each
    # request beyond the fifth opened a new one: a server backend forked, authenticated and its
    # prepared statements lost, costing more CPU than the request itself. Connections open lazily.
    kwargs.setdefault("pool_size", 40)
    kwargs.setdefault("max_overflow", 0)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


IDLE_PING_SECONDS = 10.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """SQLAlchemy's pessimistic disconnect check, only for connections idle > IDLE_PING_SECONDS: a
    busy pool pays nothing, and one back from a quiet spell is tested before a request uses it."""
    if time.monotonic() - record.info.get("checked_in_at", time.monotonic()) <= IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
    except Exception as exc:
        # The pool discards this connection and checks out another (a fresh one if need be).
        raise DisconnectionError(str(exc)) from exc
    dbapi_connection.rollback()  # leave no transaction open behind the ping


WRITTEN = "authserver_written_tables"
# Execution option of a write no cache depends on (a "last used" time): it does not clear them.
CACHE_NEUTRAL = "authserver_cache_neutral"


def _note_flushed_tables(session: Session, _context: Any) -> None:
    written = session.info.setdefault(WRITTEN, set())
    # ``dirty`` holds every object an attribute was assigned to, even to the value it had.
    changed = [obj for obj in session.dirty if session.is_modified(obj, include_collections=False)]
    for obj in (*session.new, *changed, *session.deleted):
        table = getattr(obj, "__tablename__", None)
        if table:
            written.add(table)


def _note_statement_table(state: ORMExecuteState) -> None:
    if (state.is_insert or state.is_update or state.is_delete) and not state.execution_options.get(CACHE_NEUTRAL):
        table = getattr(state.statement, "table", None)
        name = getattr(table, "name", None)
        if name:
            state.session.info.setdefault(WRITTEN, set()).add(name)


def _forget_tables(session: Session, previous: SessionTransaction) -> None:
    # Only the outermost transaction's rollback undoes everything; a savepoint's keeps the rest.
    if previous.parent is None:
        session.info.pop(WRITTEN, None)


def _sqlite_begin(conn: Any) -> None:
    readonly = conn.get_execution_options().get(READONLY, False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see make_engine)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # synchronous stays FULL (SQLite's default): a committed revocation must survive a power cut.
    # The hot paths hardly write (audit rows are batched, see audit.buffer), so fsyncs are few.
    cursor.close()


# SQLite has one writer at a time, and a writer that finds the lock taken sleeps in its busy
# handler (1, 2, 5 ... 100 ms steps), however soon the lock is free again: under load the lock
# sat idle while 15 threads slept, and the unlucky ones waited seconds. Write sessions of this
# process take turns on a Python lock first (one per database file), so a waiting writer wakes
# the moment the previous one commits; SQLite's busy handler still arbitrates between processes.
SQLITE_WRITER_WAIT = 30.0  # seconds; past it the session goes on to SQLite's own waiting
_sqlite_writers: dict[str, threading.RLock] = {}
_sqlite_writers_lock = threading.Lock()


def _writer_lock(url: str) -> threading.RLock:
    parsed = make_url(url)
    key = parsed.database or ""
    if not key or key == ":memory:" or key.startswith("file:"):
        key = url
    with _sqlite_writers_lock:
        return _sqlite_writers.setdefault(os.path.abspath(key) if key != url else key, threading.RLock())


class Database:
    """An engine and its session factory, owned by one app or one CLI call."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(**{READONLY: True})
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        self._watchers: list[tuple[frozenset[str], Callable[[], None]]] = []
        self._writer = _writer_lock(url) if self.is_sqlite else None
        event.listen(self.sessions, "after_flush", _note_flushed_tables)
        event.listen(self.sessions, "do_orm_execute", _note_statement_table)
        event.listen(self.sessions, "after_commit", self._after_commit)
        event.listen(self.sessions, "after_soft_rollback", _forget_tables)

    def on_commit(self, tables: Iterable[str], callback: Callable[[], None]) -> None:
        """Call ``callback`` after every commit, in this process, that wrote to one of ``tables``
        (ORM objects or INSERT/UPDATE/DELETE statements run through a session)."""
        self._watchers.append((frozenset(tables), callback))

    def _after_commit(self, session: Session) -> None:
        written: set[str] = session.info.pop(WRITTEN, set())
        if written:
            for tables, callback in self._watchers:
                if tables & written:
                    callback()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any exception."""
        writer = self._writer
        turn = writer is not None and writer.acquire(timeout=SQLITE_WRITER_WAIT)
        try:
            with self.sessions() as session, session.begin():
                yield session
        finally:
            if turn:
                assert writer is not None
                writer.release()

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A unit of work that only reads; on SQLite it never waits for a writer."""
        with self._read_sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A bare Core connection that only reads (on SQLite: a deferred transaction, never waiting on writers)."""
        with self._read_engine.connect() as conn:
            yield conn

    @contextmanager
    def autocommit_connection(self) -> Iterator[Connection]:
        """A bare Core connection on which every statement commits on its own: no BEGIN or COMMIT round
        trips, for hot paths whose work is single atomic statements. PostgreSQL only (the SQLite driver
        set-up in ``make_engine`` issues its own BEGIN). Statements run here bypass ``on_commit``:
        do not write the tables it watches."""
        if self.is_sqlite:
            raise RuntimeError("autocommit_connection is for PostgreSQL")
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
