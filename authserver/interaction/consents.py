"""Remembered consent: per person, client and resource, the union of what was allowed."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.db import CACHE_NEUTRAL, affected, utcnow
from authserver.interaction.models import Consent


def find(session: Session, user_id: uuid.UUID, client_id: str, resource: str, *,
         for_update: bool = False) -> Consent | None:
    query = select(Consent).where(
        Consent.user_id == user_id, Consent.client_id == client_id, Consent.resource == resource)
    return session.scalar(query.with_for_update() if for_update else query)


def granted(session: Session, user_id: uuid.UUID, client_id: str, resource: str) -> list[str]:
    row = find(session, user_id, client_id, resource)
    return list(row.scopes) if row else []


def remember(session: Session, user_id: uuid.UUID, client_id: str, resource: str, scopes: list[str],
             stay_connected: bool = True) -> list[str]:
    """Add ``scopes`` to the remembered grant (MCP step-up asks only for the new ones), and keep
    the person's latest "Stay connected" choice.

    Two approvals may race (two tabs): the row is locked while it is extended, and a first
    insert that loses against a concurrent one is retried as an update.
    """
    for _ in range(2):
        row = session.scalar(select(Consent).where(
            Consent.user_id == user_id, Consent.client_id == client_id, Consent.resource == resource,
        ).with_for_update())
        if row is not None:
            if not [s for s in row.scopes if s != OFFLINE_ACCESS]:
                row.created_at = utcnow()  # allowed again after a disconnect: "allowed on" starts anew
            row.scopes = list(dict.fromkeys([*row.scopes, *scopes]))
            row.stay_connected = stay_connected
            session.flush()
            return list(row.scopes)
        try:
            with session.begin_nested():
                row = Consent(user_id=user_id, client_id=client_id, resource=resource, scopes=list(scopes),
                              stay_connected=stay_connected)
                session.add(row)
        except IntegrityError:
            continue  # a concurrent approval inserted it first: extend that one
        return list(row.scopes)
    raise RuntimeError("could not record the consent")


def touch(session: Session, user_id: uuid.UUID, client_id: str, resource: str, now: datetime) -> None:
    """Record that the grant was used (shown as "last used" on the person's account page)."""
    session.execute(update(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id,
                                          Consent.resource == resource).values(last_used_at=now)
                    .execution_options(**{CACHE_NEUTRAL: True}))


def for_user(session: Session, user_id: uuid.UUID) -> list[Consent]:
    return list(session.scalars(select(Consent).where(Consent.user_id == user_id).order_by(Consent.updated_at.desc())))


def mark_used(session: Session, user_id: uuid.UUID, client_id: str, resource: str, now: datetime) -> bool:
    """Record that the grant was just used (a reported tool call); False when there is no such consent."""
    result = session.execute(update(Consent).where(
        Consent.user_id == user_id, Consent.client_id == client_id, Consent.resource == resource,
    ).values(last_used_at=now, updated_at=Consent.updated_at)  # use is not a change: keep updated_at
        .execution_options(synchronize_session=False, **{CACHE_NEUTRAL: True}))
    return affected(result) > 0
