"""Removing what has expired: codes, requests, sessions, refresh tokens, deny-list rows, unused clients,
spent proof jti values, expired limit counters; and, with ``AUTHSERVER_AUDIT_RETENTION_DAYS``, audit
events older than that (in batches, ``audit.queries.purge_older_than``).

Run by ``authserver db purge``, on a timer in every server process (``run_periodically``, started
in the app's lifespan: rows that anonymous /authorize calls leave behind go even on a node that
never sees a token request), and opportunistically after token requests, at most once per
interval per process, after the response is sent (never blocking a request).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, update
from sqlalchemy.orm import Session

from authserver.audit.queries import purge_older_than
from authserver.clients.models import Client
from authserver.db import Database, affected, utcnow
from authserver.interaction.models import AuthorizationRequest, LoginSession
from authserver.limits.database import purge as purge_limit_counters
from authserver.mfa.models import SecondStep
from authserver.replay import purge as purge_used_jtis
from authserver.tokens.models import AuthorizationCode, RefreshToken, RevokedAccessToken

log = logging.getLogger("authserver.purge")

# A used code is kept a while after expiry so a late replay is still recognised and revokes.
CODE_KEEP = timedelta(hours=1)


def purge(session: Session, now: datetime, grace_seconds: int) -> dict[str, int]:
    counts = {
        "authorization_codes": affected(session.execute(
            delete(AuthorizationCode).where(AuthorizationCode.expires_at < now - CODE_KEEP))),
        "authorization_requests": affected(session.execute(
            delete(AuthorizationRequest).where(AuthorizationRequest.expires_at < now))),
        "login_sessions": affected(session.execute(delete(LoginSession).where(LoginSession.expires_at < now))),
        # Sign-ins abandoned between the password and the code (mfa.steps).
        "second_steps": affected(session.execute(delete(SecondStep).where(SecondStep.expires_at < now))),
        "refresh_tokens": affected(session.execute(delete(RefreshToken).where(
            (RefreshToken.expires_at < now) | (RefreshToken.family_expires_at < now)))),
        "revoked_access_tokens": affected(session.execute(
            delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now))),
        # Self-registered clients that never got a consent (the expiry is cleared on consent), and
        # never one that still holds a live refresh token (a person would lose a working connection).
        "clients": affected(session.execute(delete(Client).where(Client.expires_at < now, ~exists().where(
            RefreshToken.client_id == Client.client_id, RefreshToken.revoked_at.is_(None),
            RefreshToken.rotated_at.is_(None), RefreshToken.expires_at > now)))),
        "used_jtis": purge_used_jtis(session, now),
        "limit_counters": purge_limit_counters(session, now),
    }
    # The sealed successor response is only needed during the race grace window.
    session.execute(update(RefreshToken).where(
        RefreshToken.successor_response.is_not(None),
        RefreshToken.rotated_at < now - timedelta(seconds=grace_seconds)).values(successor_response=None))
    return counts


# Audit retention (AUTHSERVER_AUDIT_RETENTION_DAYS): at most this many batches of PURGE_BATCH rows a run,
# each its own transaction; a backlog (retention just switched on) goes over the following runs.
AUDIT_BATCHES_PER_RUN = 100


class Purger:
    def __init__(self, db: Database, grace_seconds: int, interval: float = 300.0,
                 audit_retention_days: int = 0) -> None:
        self._db = db
        self._grace = grace_seconds
        self._interval = interval
        self._audit_retention = timedelta(days=audit_retention_days) if audit_retention_days else None
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self._interval

    def run_if_due(self) -> None:
        if self.due():
            self.run()

    def run(self) -> None:
        """Purge now, unless a purge is already running in this process."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._last = time.monotonic()
            now = utcnow()
            with self._db.session() as session:
                counts = purge(session, now, self._grace)
            if self._audit_retention is not None:
                counts["audit_events"] = purge_older_than(self._db, now - self._audit_retention,
                                                          max_batches=AUDIT_BATCHES_PER_RUN)
            log.info("purged expired rows: %s", counts)
        except Exception:  # a failed purge must never affect requests; it runs again later
            log.exception("purge failed")
        finally:
            self._lock.release()


async def run_periodically(purger: Purger, interval: float, stop: asyncio.Event) -> None:
    """Purge about every ``interval`` seconds until ``stop`` is set.

    Each wait is drawn from 0.5 to 1.5 times ``interval``, so nodes started together (a deployment) do not
    all purge at the same moment; the purge itself runs in a worker thread, off the event loop.
    """
    from starlette.concurrency import run_in_threadpool

    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval * random.uniform(0.5, 1.5))  # noqa: S311
            return
        except TimeoutError:
            pass
        await run_in_threadpool(purger.run)
