"""Checking a username and password: one rule for the authorization flow and the sign-in page.

A sign-in is three steps, so that no transaction is open during the ~30 ms of argon2id (on
SQLite a write transaction holds the database's one write lock; every other writer would wait):

1. ``prepare``, in a read transaction: the client IP's recent failures and the account.
2. ``verify``, with no transaction: argon2id, on the bounded pool of ``users.passwords`` (never
   on the event loop). An unknown username is verified against a dummy hash, so its answer takes
   as long as a real account's; a hash made with older parameters is rehashed here too.
3. ``conclude``, in the caller's write transaction: the failures are counted again (writers are
   serialised there on SQLite, so no more than the limit of attempts learn their verdict, as
   before), the account is read again (disabled, or its password changed meanwhile: a failure),
   a rehash is saved, and a failure is audited. The caller records ``login.succeeded`` and the
   new session in that same transaction.

Failures are audited (the name kept only when it is a real account's: what people type there is
often a password) and counted per client IP from the audit log, so the limit holds on every node.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from authserver.audit.log import record
from authserver.audit.models import AuditEvent
from authserver.db import utcnow
from authserver.users import repository as users
from authserver.users.models import User
from authserver.users.passwords import hash_password, needs_rehash, verify_password
from authserver.web.i18n import N_

LOGIN_FAILURE_LIMIT = 20  # per client IP in LOGIN_FAILURE_WINDOW, counted from the audit log (all nodes)
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
BAD_LOGIN = N_("That username and password do not match an active account.")
THROTTLED = N_("Too many failed sign-ins from your network. Wait a few minutes and try again.")
MAX_USERNAME, MAX_PASSWORD = 150, 1024


@dataclass
class Attempt:
    """One sign-in attempt between its steps; what was read, then what argon2 said."""

    username: str
    malformed: bool
    ip: str | None
    throttled: bool
    user_id: uuid.UUID | None = None
    stored_hash: str | None = None
    verified: bool = False
    new_hash: str | None = None  # the password hashed again with today's parameters

    @property
    def well_formed(self) -> bool:
        """Input worth an argon2 verification (and that PostgreSQL can store)."""
        return not self.malformed and 0 < len(self.username) <= MAX_USERNAME

    @property
    def named(self) -> bool:
        """A username that may be looked up (and audited when it is an account's)."""
        return not self.malformed and len(self.username) <= MAX_USERNAME


def prepare(session: Session, username: str, *, malformed: bool, ip: str | None) -> Attempt:
    """Step 1, in a read (or any) transaction."""
    attempt = Attempt(username, malformed, ip, throttled=too_many_failures(session, ip))
    if not attempt.throttled and attempt.well_formed:
        row = session.execute(select(User.id, User.password_hash).where(User.username == username)).first()
        if row is not None:
            attempt.user_id, attempt.stored_hash = row[0], row[1]
    return attempt


def verify(attempt: Attempt, password: str) -> Attempt:
    """Step 2, with no transaction open: argon2id (a dummy verification for an unknown username)."""
    if attempt.throttled or not attempt.well_formed or len(password) > MAX_PASSWORD:
        return attempt  # no argon2 work for such input
    attempt.verified = verify_password(attempt.stored_hash, password)
    if attempt.verified and attempt.stored_hash is not None and needs_rehash(attempt.stored_hash):
        attempt.new_hash = hash_password(password)
    return attempt


def conclude(session: Session, attempt: Attempt, *, client_id: str | None = None) -> tuple[User | None, str | None]:
    """Step 3, in the write transaction that also starts the session: ``(user, None)`` when the
    password was right and the account is enabled, else ``(None, error message id)``, audited."""
    user = None
    if attempt.throttled or too_many_failures(session, attempt.ip):
        error: str | None = THROTTLED
    elif not attempt.verified or attempt.user_id is None:
        error = BAD_LOGIN
    else:
        user = users.get(session, attempt.user_id)
        if user is None or user.disabled or user.password_hash != attempt.stored_hash:
            user, error = None, BAD_LOGIN  # disabled, removed or given another password meanwhile
        else:
            error = None
    if error is not None:
        known = attempt.named and users.get_by_username(session, attempt.username)
        record(session, "login.failed", actor=str(known.id) if known else None, client_id=client_id,
               ip=attempt.ip, **({"username": attempt.username} if known else {}))
        return None, error
    assert user is not None
    if attempt.new_hash is not None:
        user.password_hash = attempt.new_hash
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
