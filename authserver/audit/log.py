"""The audit log: who did what, to which client, from where, and when.

Events are written in the same transaction as the change they describe, so an
event exists exactly when its change does. Never put a secret in ``detail``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from authserver import observe
from authserver.audit.models import AuditEvent

events_log = logging.getLogger("authserver.events")

SUCCESS, FAILURE = "success", "failure"
FAILURE_SUFFIXES = (".failed", ".denied", ".refused")
FAILURE_EVENTS = frozenset({"token.reuse_detected", "code.replayed"})


def outcome_of(event: str) -> str:
    """Whether an event records something refused or gone wrong (migration 0003 applies the same rule)."""
    return FAILURE if event.endswith(FAILURE_SUFFIXES) or event in FAILURE_EVENTS else SUCCESS


def record(session: Session, event: str, *, actor: str | None = None, client_id: str | None = None,
           ip: str | None = None, outcome: str | None = None, **detail: Any) -> None:
    outcome = outcome or outcome_of(event)
    session.add(AuditEvent(event=event, outcome=outcome, actor=actor, client_id=client_id, ip=ip, detail=detail))
    observe.audit_event(event, detail)
    if events_log.isEnabledFor(logging.INFO):
        log_events([{"event": event, "outcome": outcome, "actor": actor, "client_id": client_id, "ip": ip,
                     "detail": detail}])


def log_events(rows: list[dict[str, Any]]) -> None:
    """Audit events as log lines too (``authserver.events``, INFO): one record for many, each
    event its own line (``logconfig`` formats ``audit_events``), so a batch of the token path's
    events costs one log record, written by the batch writer's thread rather than the request."""
    events_log.info("%d audit events", len(rows), extra={"audit_events": rows})


def recent(session: Session, limit: int = 100, event: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if event:
        query = query.where(AuditEvent.event == event)
    return list(session.scalars(query))


def by_actor(session: Session, actor: str, events: Iterable[str], *, before: int | None = None,
             limit: int = 50) -> list[AuditEvent]:
    """One person's events of the given kinds, newest first; ``before`` an id (keyset pages)."""
    query = (select(AuditEvent).where(AuditEvent.actor == actor, AuditEvent.event.in_(list(events)))
             .order_by(AuditEvent.id.desc()).limit(limit))
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return list(session.scalars(query))


def count_since(session: Session, event: str, since: datetime, *, actor: str) -> int:
    """How many ``event`` rows ``actor`` caused after ``since`` (throttling counts from the log, on every node)."""
    return session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.event == event, AuditEvent.actor == actor, AuditEvent.at > since)) or 0


def last_at(session: Session, event: str, actors: Iterable[str]) -> dict[str, datetime]:
    """Actor → the time of their latest ``event`` (e.g. each person's last ``login.succeeded``)."""
    actors = list(actors)
    if not actors:
        return {}
    rows = session.execute(select(AuditEvent.actor, func.max(AuditEvent.at))
                           .where(AuditEvent.event == event, AuditEvent.actor.in_(actors))
                           .group_by(AuditEvent.actor))
    return {actor: at for actor, at in rows if actor is not None and at is not None}
