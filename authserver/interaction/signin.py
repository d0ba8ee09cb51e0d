"""Checking a username and password: one rule for the authorization flow and the sign-in page.

argon2id verification runs in the caller's worker thread, never on the event loop. Failures
are audited (the name kept only when it is a real account's: what people type there is often
a password) and counted per client IP from the audit log, so the limit holds on every node.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from authserver.audit.log import record
from authserver.audit.models import AuditEvent
from authserver.db import utcnow
from authserver.users import repository as users
from authserver.users.models import User
from authserver.web.i18n import N_

LOGIN_FAILURE_LIMIT = 20  # per client IP in LOGIN_FAILURE_WINDOW, counted from the audit log (all nodes)
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
BAD_LOGIN = N_("That username and password do not match an active account.")
THROTTLED = N_("Too many failed sign-ins from your network. Wait a few minutes and try again.")
MAX_USERNAME, MAX_PASSWORD = 150, 1024


def check_credentials(session: Session, username: str, password: str, *, malformed: bool, ip: str | None,
                      client_id: str | None = None) -> tuple[User | None, str | None]:
    """``(user, None)`` when the password is right, else ``(None, error message id)``, audited."""
    user = None
    if too_many_failures(session, ip):
        error: str | None = THROTTLED
    elif malformed or not 0 < len(username) <= MAX_USERNAME or len(password) > MAX_PASSWORD:
        error = BAD_LOGIN  # no argon2 work, and nothing PostgreSQL cannot store, for such input
    else:
        user = users.authenticate(session, username, password)
        error = None if user is not None else BAD_LOGIN
    if error is not None:
        known = not malformed and len(username) <= MAX_USERNAME and users.get_by_username(session, username)
        record(session, "login.failed", actor=str(known.id) if known else None, client_id=client_id, ip=ip,
               **({"username": username} if known else {}))
        return None, error
    assert user is not None
    return user, None


def shown_username(username: str, malformed: bool) -> str:
    """What the form shows again after a failure."""
    return username if not malformed and len(username) <= MAX_USERNAME else ""


def too_many_failures(session: Session, ip: str | None) -> bool:
    if ip is None:
        return False
    failures = session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.event == "login.failed", AuditEvent.ip == ip, AuditEvent.at > utcnow() - LOGIN_FAILURE_WINDOW))
    return (failures or 0) >= LOGIN_FAILURE_LIMIT
