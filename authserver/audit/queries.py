"""Reading the audit log: the console's filters, keyset pages, counts and the JSON-lines export.

Pages go by id (``before``: the smallest id of the previous page), not by offset: ids only
grow, so a page never shifts while events keep arriving, and each page is an index range scan
however deep the operator goes. Every filter maps to an indexed column (event, outcome, actor,
client_id, at).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from authserver.audit.models import AuditEvent
from authserver.db import Database, affected

EXPORT_BATCH = 1000
PURGE_BATCH = 1000


@dataclass(frozen=True)
class AuditFilter:
    """Every field narrows; None (or "") means any. ``start`` is inclusive, ``end`` exclusive."""

    actor: str | None = None
    client_id: str | None = None
    event: str | None = None
    outcome: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.actor:
            where.append(AuditEvent.actor == self.actor)
        if self.client_id:
            where.append(AuditEvent.client_id == self.client_id)
        if self.event:
            where.append(AuditEvent.event == self.event)
        if self.outcome:
            where.append(AuditEvent.outcome == self.outcome)
        if self.start is not None:
            where.append(AuditEvent.at >= self.start)
        if self.end is not None:
            where.append(AuditEvent.at < self.end)
        return where


def page(session: Session, where: AuditFilter, *, before: int | None = None, limit: int = 50) -> list[AuditEvent]:
    """Matching events, newest first, with ids below ``before`` when given."""
    query = select(AuditEvent).where(*where.conditions())
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))


def after(session: Session, where: AuditFilter, after_id: int, *, limit: int) -> list[AuditEvent]:
    """Matching events with ids above ``after_id``, oldest first (``audit tail``)."""
    query = select(AuditEvent).where(*where.conditions(), AuditEvent.id > after_id)
    return list(session.scalars(query.order_by(AuditEvent.id).limit(limit)))


def max_id(session: Session) -> int:
    return session.scalar(select(func.max(AuditEvent.id))) or 0


def purge_older_than(db: Database, cutoff: datetime, *, batch: int = PURGE_BATCH,
                     max_batches: int | None = None) -> int:
    """Delete events before ``cutoff``, ``batch`` rows per transaction (short locks, however many
    there are), at most ``max_batches`` batches (None: all); how many were deleted."""
    deleted, batches = 0, 0
    while max_batches is None or batches < max_batches:
        with db.session() as session:
            ids = select(AuditEvent.id).where(AuditEvent.at < cutoff).order_by(AuditEvent.id).limit(batch)
            n = affected(session.execute(delete(AuditEvent).where(AuditEvent.id.in_(ids.scalar_subquery()))))
        deleted += n
        batches += 1
        if n < batch:
            break
    return deleted


def count(session: Session, events: Iterable[str], since: datetime) -> int:
    """How many events of these types happened at or after ``since`` (the dashboard's counters)."""
    return session.scalar(select(func.count()).select_from(AuditEvent)
                          .where(AuditEvent.event.in_(list(events)), AuditEvent.at >= since)) or 0


def event_types(session: Session) -> list[str]:
    """The event types present in the log, for the filter's select (the index answers it)."""
    return list(session.scalars(select(AuditEvent.event).distinct().order_by(AuditEvent.event)))


def as_dict(event: AuditEvent) -> dict[str, Any]:
    return {"id": event.id, "at": event.at.isoformat(), "event": event.event, "outcome": event.outcome,
            "actor": event.actor, "client_id": event.client_id, "ip": event.ip, "detail": event.detail}


def export_lines(db: Database, where: AuditFilter, cap: int) -> Iterator[str]:
    """At most ``cap`` matching events as JSON lines, newest first.

    Each batch is read in its own short transaction, so a slow download never holds one open;
    keyset paging keeps batches consistent with each other while events are being added.
    """
    before: int | None = None
    left = cap
    while left > 0:
        with db.read_session() as session:
            batch = page(session, where, before=before, limit=min(EXPORT_BATCH, left))
            lines = "".join(json.dumps(as_dict(e), separators=(",", ":"), default=str) + "\n" for e in batch)
        if not batch:
            return
        yield lines
        left -= len(batch)
        before = batch[-1].id
        if len(batch) < EXPORT_BATCH:
            return
