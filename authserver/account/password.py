"""Changing one's own password.

The current password is required even in a signed-in session: a borrowed or stolen session
must not be enough to take the account over. Wrong guesses are audited
(``password.change_failed``) and limited per person and per network, counted from the audit
log so the limit holds on every node; without that a stolen session cookie would allow
unlimited offline-speed guessing of the password behind it.

On success the new argon2id hash is stored and every *other* session of the person ends
(whoever else was signed in, perhaps the reason for the change, is signed out), while the
browser that made the change stays signed in. Refresh tokens of connected apps are not
touched: the apps were allowed by the person, not by the password, and are disconnected on
the Connected apps page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from authserver.audit import log as audit
from authserver.interaction import sessions, signin
from authserver.users import repository as users
from authserver.users.models import User
from authserver.web.i18n import N_

FAILURE_LIMIT = 5  # wrong current passwords per person in signin.LOGIN_FAILURE_WINDOW

WRONG_CURRENT = N_("That is not your current password.")
TOO_MANY = N_("Too many wrong passwords. Wait a few minutes and try again.")
# Shown with ``min`` and ``max`` filled in (MIN_LENGTH, MAX_LENGTH).
TOO_SHORT = N_("Use at least %(min)s characters.")
TOO_LONG = N_("Use at most %(max)s characters.")
MISMATCH = N_("The two new passwords are not the same.")
MIN_LENGTH, MAX_LENGTH = users.MIN_PASSWORD_LENGTH, signin.MAX_PASSWORD


@dataclass(frozen=True)
class PasswordChange:
    """Field name → message id of what was wrong; empty when the password was changed."""

    errors: dict[str, str]
    other_sessions_ended: int = 0

    @property
    def done(self) -> bool:
        return not self.errors


def change(session: Session, user: User, session_value: str, *, current: str, new: str, confirm: str,
           ip: str | None, now: datetime) -> PasswordChange:
    """Check ``current``, then set ``new`` and end the person's other sessions (argon2: call off the loop)."""
    errors = _new_password_errors(new, confirm)
    actor = str(user.id)
    if _throttled(session, actor, ip, now):
        audit.record(session, "password.change_failed", actor=actor, ip=ip, outcome=audit.FAILURE,
                     reason="throttled")
        return PasswordChange({"current": TOO_MANY, **errors})
    if len(current) > MAX_LENGTH or users.authenticate(session, user.username, current) is None:
        audit.record(session, "password.change_failed", actor=actor, ip=ip, outcome=audit.FAILURE,
                     reason="wrong current password")
        return PasswordChange({"current": WRONG_CURRENT, **errors})
    if errors:
        return PasswordChange(errors)
    users.set_password(session, user, new)
    ended = sessions.end_others(session, user.id, session_value)
    audit.record(session, "password.changed", actor=actor, ip=ip, other_sessions_ended=ended)
    return PasswordChange({}, ended)


def _new_password_errors(new: str, confirm: str) -> dict[str, str]:
    if len(new) < MIN_LENGTH:
        return {"new": TOO_SHORT}
    if len(new) > MAX_LENGTH:
        return {"new": TOO_LONG}
    if confirm != new:
        return {"confirm": MISMATCH}
    return {}


def _throttled(session: Session, actor: str, ip: str | None, now: datetime) -> bool:
    since = now - signin.LOGIN_FAILURE_WINDOW
    return signin.too_many_failures(session, ip) or \
        audit.count_since(session, "password.change_failed", since, actor=actor) >= FAILURE_LIMIT
