"""Audit events of stateless work, written in batches.

Most events are written in the transaction of the change they describe (``audit.log.record``).
Issuing a ``client_credentials`` token changes nothing in the database: the token is a signed
JWT. Writing its ``token.issued`` row, and the client's coarse "last used" time, in a
transaction of their own per request would make the hot path wait on the database's write
lock for a row nobody reads in that request. So such events go into this buffer, and one
background thread writes them in one transaction per batch:

* at most ``flush_seconds`` (``AUTHSERVER_AUDIT_FLUSH_SECONDS``, default 0.5 s) after they
  were recorded, sooner when ``batch_size`` are waiting;
* on shutdown (``close``, run by the app's lifespan), before the process exits;
* a batch the database refused stays queued and is retried; beyond ``max_pending`` events the
  oldest are dropped, each loss logged, so a database outage cannot exhaust memory. When the
  database accepts other rows but refuses one (data it cannot store), that row alone is logged
  and set aside, so one bad row never holds up the rest.

The thread starts with the first event and ends after a few idle seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, or_, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from authserver import observe
from authserver.audit.log import events_log, log_events, outcome_of
from authserver.audit.models import AuditEvent
from authserver.clients.models import Client
from authserver.db import CACHE_NEUTRAL, Database, utcnow

log = logging.getLogger("authserver.audit")

# "Last used" in the console is coarse on purpose: one write a minute per client, not one per token.
USAGE_RESOLUTION = timedelta(minutes=1)
IDLE_EXIT_SECONDS = 5.0
TABLE = cast(Table, AuditEvent.__table__)
IP_LENGTH = cast(Any, TABLE.c.ip.type).length or 64
# executemany with RETURNING: SQLAlchemy's "insertmanyvalues" then sends multi-row INSERTs of
# up to 1,000 rows, rewriting one compiled statement, on SQLite and PostgreSQL alike. Plain
# executemany on SQLite is one step per row, and at each step this thread gives up the GIL and
# waits up to a switch interval (5 ms) to get it back while the event loop is busy.
INSERT_ROWS = insert(TABLE).returning(TABLE.c.id)


def _refused_for_its_data(exc: Exception) -> bool:
    """The database (or the driver, binding values) refused what was sent, not because it is away."""
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    if isinstance(exc, DBAPIError):
        return False  # operational: unreachable, locked, read-only, no such table
    return isinstance(exc, (StatementError, TypeError, ValueError))


class AuditBuffer:
    def __init__(self, db: Database, *, flush_seconds: float = 0.5, batch_size: int = 500,
                 max_pending: int = 100_000) -> None:
        self._db = db
        self._flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._events: list[dict[str, Any]] = []
        self._used: dict[str, datetime] = {}  # client_id → latest use not yet written
        self._used_written: dict[str, datetime] = {}  # what this process last wrote, to skip needless writes
        self._thread: threading.Thread | None = None
        self._closed = False
        self._writing = 0

    def record(self, event: str, *, actor: str | None = None, client_id: str | None = None,
               ip: str | None = None, at: datetime | None = None, **detail: Any) -> None:
        # The IP comes from the connection or, behind a proxy, from a header anyone can set.
        row = {"event": event, "outcome": outcome_of(event), "actor": actor, "client_id": client_id,
               "ip": ip[:IP_LENGTH] if ip else ip, "detail": detail, "at": at or utcnow()}
        observe.audit_event(event, detail)
        with self._lock:
            if len(self._events) >= self._max_pending:
                dropped = self._events.pop(0)
                log.error("audit buffer full: dropped a %s event (is the database reachable?)", dropped["event"])
            self._events.append(row)
            self._start_or_wake(len(self._events) >= self._batch_size)

    def client_used(self, client_id: str, at: datetime) -> None:
        """Note a use of the client; written at most once a minute per client."""
        written = self._used_written.get(client_id)
        if written is not None and at - written < USAGE_RESOLUTION:
            return
        with self._lock:
            self._used[client_id] = at
            self._start_or_wake(False)

    def pending(self) -> int:
        """Events recorded and not yet written (those being written included)."""
        with self._lock:
            return len(self._events) + self._writing

    def flush(self) -> None:
        """Write everything recorded so far, now, in the caller's thread (kept queued if that fails)."""
        with self._lock:
            events, self._events = self._events, []
            used, self._used = self._used, {}
        if events or used:
            try:
                self._write_or_isolate(events, used)
            except Exception:
                self._requeue(events, used)
                raise

    def _requeue(self, events: list[dict[str, Any]], used: dict[str, datetime]) -> None:
        with self._lock:
            self._events[:0] = events
            for client_id, at in used.items():
                self._used.setdefault(client_id, at)

    def close(self) -> None:
        """Stop the thread and write what is left (shutdown)."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout=30)
        try:
            self.flush()
        except Exception:
            log.exception("writing %d audit events at shutdown failed: they are lost", self.pending())
        with self._lock:
            # An app that is started again (tests do) records and flushes as before.
            self._closed = False
            self._thread = None

    # ---- the writer thread ---------------------------------------------------------------------

    def _start_or_wake(self, now: bool) -> None:
        # Called with the lock held.
        if self._closed:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="authserver-audit", daemon=True)
            self._thread.start()
        elif now:
            self._wake.notify()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._lock:
                if not self._closed and len(self._events) < self._batch_size:
                    self._wake.wait(self._flush_seconds)
                if self._closed:
                    return  # close() writes the rest
                events, self._events = self._events, []
                used, self._used = self._used, {}
                self._writing = len(events)
                if not events and not used:
                    if time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
                        self._thread = None
                        return
                    continue
            idle_since = time.monotonic()
            try:
                self._write_or_isolate(events, used)
            except Exception:
                log.exception("writing %d audit events failed; retrying", len(events))
                self._requeue(events, used)
                with self._lock:
                    self._writing = 0
                time.sleep(self._flush_seconds)
            else:
                with self._lock:
                    self._writing = 0

    def _write_or_isolate(self, events: list[dict[str, Any]], used: dict[str, datetime]) -> None:
        """Write the batch; if the database refuses it for its data, write row by row and set aside
        (logged) the rows it refuses. Any other failure (the database is away) is raised."""
        try:
            self._write(events, used)
        except Exception as exc:
            if not _refused_for_its_data(exc):
                raise
            self._write([], used)
            for i, row in enumerate(events):
                try:
                    self._write([row], {})
                except Exception as refused:
                    if not _refused_for_its_data(refused):
                        # The database went away meanwhile: what is not written yet waits for the next try.
                        log.exception("writing audit events failed; %d wait for the next try", len(events) - i)
                        self._requeue(events[i:], {})
                        return
                    log.error("audit event %s (actor %s, client %s) cannot be stored and is dropped: %s",
                              row["event"], row["actor"], row["client_id"], refused)

    def _write(self, events: list[dict[str, Any]], used: dict[str, datetime]) -> None:
        with self._db.session() as session:
            if events:
                session.execute(INSERT_ROWS, events).all()
            for client_id, at in used.items():
                session.execute(update(Client).where(
                    Client.client_id == client_id,
                    or_(Client.last_used_at.is_(None), Client.last_used_at <= at - USAGE_RESOLUTION))
                    .values(last_used_at=at, updated_at=Client.updated_at)  # use is not a change
                    .execution_options(**{CACHE_NEUTRAL: True}))
        self._used_written.update(used)
        if events and events_log.isEnabledFor(logging.INFO):
            log_events(events)  # once stored: a batch retried is not logged twice
