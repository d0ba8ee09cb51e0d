"""Changing one's own password.

The current password is required even in a signed-in session: a borrowed or stolen session
must not be enough to take the account over. A wrong current password is a password guess
like a wrong one at sign-in, so both share one throttle (``interaction.signin.Throttle``, keyed
by the account's username and the address): guesses through a stolen session cookie use up the
same budget as guesses at the sign-in form, slow down the same way, and engage the same lock
(``login.locked``, which the account page shows its owner). Wrong guesses are audited
(``password.change_failed``); throttled attempts are counted, not written one by one.

Like a sign-in, it runs in three steps so that no transaction is open while argon2id works: the
throttle's gate (its own short transactions), the verification, then one write transaction that
reads the account again (its password changed or the account was disabled meanwhile: refused),
stores the new hash and ends every *other* session of the person (whoever else was signed in,
perhaps the reason for the change, is signed out), while the browser that made the change stays
signed in. Refresh tokens of connected apps are not touched: the apps were allowed by the
person, not by the password, and are disconnected on the Connected apps page.

A one-time password (the first admin's, a generated or an admin's reset one: someone else knew
it) makes every page but this one send the person here (``pages.require_signed_in``), an
authorization request included, until they choose a different password of their own; then they
go back to where they were (``next``, a local path only).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from authserver.audit import log as audit
from authserver.db import Database
from authserver.interaction import sessions, signin
from authserver.interaction.signin import Throttle
from authserver.users import repository as users
from authserver.users.passwords import hash_password, verify_password
from authserver.web.i18n import N_

WRONG_CURRENT = N_("That is not your current password.")
TOO_MANY = N_("Too many wrong passwords. Wait a few minutes and try again.")
# Shown with ``min`` and ``max`` filled in (MIN_LENGTH, MAX_LENGTH).
TOO_SHORT = N_("Use at least %(min)s characters.")
TOO_LONG = N_("Use at most %(max)s characters.")
MISMATCH = N_("The two new passwords are not the same.")
SAME_AS_ONE_TIME = N_("Choose a password of your own, not the one-time password you were given.")
MIN_LENGTH, MAX_LENGTH = users.MIN_PASSWORD_LENGTH, signin.MAX_PASSWORD


@dataclass(frozen=True)
class Account:
    """The signed-in person as read before the change (no ORM object: no transaction stays open)."""

    user_id: uuid.UUID
    username: str
    password_hash: str
    session_value: str  # this browser's session cookie: the one session that stays
    one_time: bool = False  # signed in with a one-time password (User.must_change_password)


@dataclass(frozen=True)
class PasswordChange:
    """Field name → message id of what was wrong; empty when the password was changed."""

    errors: dict[str, str]
    other_sessions_ended: int = 0

    @property
    def done(self) -> bool:
        return not self.errors


def change(db: Database, throttle: Throttle, account: Account, *, current: str, new: str, confirm: str,
           ip: str | None) -> PasswordChange:
    """Check ``current``, then set ``new`` and end the person's other sessions (argon2: call off the loop)."""
    errors = _new_password_errors(new, confirm)
    actor = str(account.user_id)
    gate = throttle.admit(account.username, ip)
    if gate.refused is not None:
        if signin.worth_a_row(gate.throttled_count):
            with db.session() as session:
                audit.record(session, "password.change_failed", actor=actor, ip=ip, outcome=audit.FAILURE,
                             reason="throttled", rule=gate.refused, throttled_attempts=gate.throttled_count)
        return PasswordChange({"current": TOO_MANY, **errors})
    if len(current) > MAX_LENGTH or not verify_password(account.password_hash, current):
        throttle.failed(account.username, ip)
        with db.session() as session:
            audit.record(session, "password.change_failed", actor=actor, ip=ip, outcome=audit.FAILURE,
                         reason="wrong current password")
            if gate.locked:
                audit.record(session, "login.locked", actor=actor, ip=ip, failures=gate.account_failures,
                             username=account.username)
        return PasswordChange({"current": WRONG_CURRENT, **errors})
    throttle.succeeded(account.username, ip, gate)
    if not errors and account.one_time and new == current:
        errors = {"new": SAME_AS_ONE_TIME}  # someone else knows it: it must not stay
    if errors:
        return PasswordChange(errors)
    new_hash = hash_password(new)
    with db.session() as session:
        user = users.get(session, account.user_id)
        if user is None or user.disabled or user.password_hash != account.password_hash:
            # Disabled, or its password changed while this one was checked: the current password
            # this form was given is not current any more.
            return PasswordChange({"current": WRONG_CURRENT})
        user.password_hash = new_hash
        user.must_change_password = False
        ended = sessions.end_others(session, user.id, account.session_value)
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
