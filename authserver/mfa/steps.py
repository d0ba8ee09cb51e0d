"""The sign-in's second step: after a right password, a code (TOTP or a recovery code) before any session.

The step is a row (``SecondStep``) keyed by the hash of a 256-bit value the browser holds in an
``HttpOnly`` cookie, and bound to that browser's binding cookie and, inside an authorization
request, to that request: the value alone is useless in another browser, and a step begun for one
request cannot finish another. It lives ``TTL`` seconds and allows ``MAX_ATTEMPTS`` codes; then
the password is asked again. No login session exists until a code is accepted, so going
straight to the consent step, /account or /admin meets "sign in" as before.

Wrong codes are sign-in failures of the account's username: they go through the same shared
throttle as passwords (``interaction.signin.Throttle``: per username and address, per username,
per address), so knowing the password gives a guesser a handful of codes and then waits that
double, across every node. The throttle's counters are touched outside the write transaction
(as for passwords: on SQLite a transaction holds the one write lock). Accepting a code, ending
the step (a conditional DELETE: once) and starting the session happen in one transaction.

Audit: ``mfa.challenged`` (password right, code asked), ``mfa.failed``, ``mfa.throttled`` (1st,
10th, 100th … throttled attempt), ``mfa.recovery_used`` (with how many codes are left), and the
usual ``login.succeeded`` with the ``amr`` of the sign-in. No code or secret is ever written.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from authserver.audit.log import record
from authserver.db import affected, utcnow
from authserver.interaction import sessions
from authserver.interaction.models import LoginSession
from authserver.interaction.signin import THROTTLED, worth_a_row
from authserver.mfa import totp
from authserver.mfa.models import SecondStep
from authserver.secrets import hash_secret, new_secret
from authserver.services import Services
from authserver.users import repository as users
from authserver.users.models import User
from authserver.web.i18n import N_

TTL = 300
MAX_ATTEMPTS = 5
WRONG_CODE = N_("That code is not right, or it was used already. Enter the newest code from your authenticator app, "
                "or an unused recovery code.")
START_AGAIN = N_("That took too long, or too many codes were wrong. Sign in again.")


def start(session: Session, user_id: uuid.UUID, browser_id: str, request_hash: str | None,
          now: datetime | None = None) -> str:
    """A new second step for this browser (its earlier ones, and the person's expired ones, go)."""
    now = now or utcnow()
    browser_hash = hash_secret(browser_id)
    session.execute(delete(SecondStep).where(
        (SecondStep.browser_hash == browser_hash) | ((SecondStep.user_id == user_id) & (SecondStep.expires_at <= now))))
    value = new_secret(32)
    session.add(SecondStep(id_hash=hash_secret(value), user_id=user_id, browser_hash=browser_hash,
                           request_hash=request_hash, attempts=0, created_at=now,
                           expires_at=now + timedelta(seconds=TTL)))
    return value


def find(session: Session, value: str | None, browser_id: str | None, request_hash: str | None,
         now: datetime | None = None) -> SecondStep | None:
    """The live step of this browser for this request (None: the stand-alone sign-in page)."""
    if not value or not browser_id or len(value) > 100:
        return None
    row = session.get(SecondStep, hash_secret(value))
    if row is None or row.expires_at <= (now or utcnow()) or row.request_hash != request_hash:
        return None
    if not hmac.compare_digest(row.browser_hash, hash_secret(browser_id)):
        return None
    return row


def _spend_attempt(session: Session, row: SecondStep) -> bool:
    return affected(session.execute(update(SecondStep).where(
        SecondStep.id_hash == row.id_hash, SecondStep.attempts < MAX_ATTEMPTS)
        .values(attempts=SecondStep.attempts + 1))) == 1


def _end(session: Session, row: SecondStep) -> bool:
    return affected(session.execute(delete(SecondStep).where(SecondStep.id_hash == row.id_hash))) == 1


@dataclass
class Outcome:
    """A signed-in session (``session_value``), or an error to show, or ``start_again``."""

    session_value: str | None = None
    error: str | None = None
    start_again: bool = False


def complete(services: Services, value: str | None, browser_id: str | None, request_hash: str | None, code: str,
             ip: str | None, *, client_id: str | None = None,
             signed_in: Callable[[Session, User, LoginSession], None] | None = None) -> Outcome:
    """Check a second-step code; when right, end the step and start the session (``signed_in`` is
    called in that same transaction, e.g. to mark the authorization request authenticated)."""
    with services.db.read_session() as session:
        row = find(session, value, browser_id, request_hash)
        user = users.get(session, row.user_id) if row is not None else None
        if row is None or user is None:
            return Outcome(start_again=True)
        user_id, username = user.id, user.username
    throttle = services.signin_throttle
    gate = throttle.admit(username, ip)
    if gate.refused is not None:
        if worth_a_row(gate.throttled_count):
            with services.db.session() as session:
                record(session, "mfa.throttled", actor=str(user_id), client_id=client_id, ip=ip, rule=gate.refused,
                       throttled_attempts=gate.throttled_count, retry_after=gate.retry_after)
        return Outcome(error=THROTTLED)
    outcome = Outcome()
    with services.db.session() as session:
        row = find(session, value, browser_id, request_hash)
        if row is None or not _spend_attempt(session, row):
            if row is not None:
                _end(session, row)
            outcome = Outcome(start_again=True)
        else:
            user = users.get(session, user_id)
            live = user is not None and not user.disabled
            checked = totp.check(session, totp.Sealer(services.secret), user_id, code) if live else None
            if user is None or checked is None:
                _end(session, row)  # disabled or removed meanwhile
                outcome = Outcome(start_again=True)
            elif checked.amr is None:
                record(session, "mfa.failed", actor=str(user_id), client_id=client_id, ip=ip,
                       attempt=row.attempts + 1)
                outcome = Outcome(error=START_AGAIN if row.attempts + 1 >= MAX_ATTEMPTS else WRONG_CODE,
                                  start_again=row.attempts + 1 >= MAX_ATTEMPTS)
                if outcome.start_again:
                    _end(session, row)
            elif _end(session, row):
                session_value, login = sessions.start(session, user, services.settings.session_ttl, ip,
                                                      amr=checked.amr)
                if checked.method == "recovery":
                    record(session, "mfa.recovery_used", actor=str(user_id), client_id=client_id, ip=ip,
                           recovery_codes_left=totp.recovery_codes_left(session, user_id))
                record(session, "login.succeeded", actor=str(user_id), client_id=client_id, ip=ip,
                       username=user.username, amr=checked.amr)
                if signed_in is not None:
                    signed_in(session, user, login)
                outcome = Outcome(session_value=session_value)
            else:
                outcome = Outcome(start_again=True)  # a concurrent request finished this step first
    if outcome.session_value is not None:
        throttle.succeeded(username, ip, gate)
    elif outcome.error is not None:
        throttle.failed(username, ip)
    return outcome
