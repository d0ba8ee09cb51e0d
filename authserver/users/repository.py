"""Users: creation with argon2id passwords, lookup, sign-in checks, roles, disabling, deletion.

Rule kept here so the console and the CLI share it: the last enabled admin cannot be disabled,
deleted or lose the admin role (not even by themselves), or nobody could run the console any more. The
check locks the enabled admins' rows (``FOR UPDATE`` on PostgreSQL; SQLite serialises writers),
so two admins disabling each other at once cannot both succeed. Disabling a person or resetting
their password ends their login sessions (``interaction.sessions.end_all``); their refresh tokens
already fail while they are disabled (``oauth.grants.refresh_token``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.errors import FieldError, NotFound
from authserver.interaction import sessions
from authserver.users.models import ROLES, User
from authserver.users.passwords import hash_password, needs_rehash, verify_password

USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}")  # fullmatch: `$` allows a final newline
MIN_PASSWORD_LENGTH = 8


def create_user(session: Session, username: str, password: str, roles: list[str] | None = None, *,
                one_time: bool = False) -> User:
    """``one_time``: someone else knows the password (it was generated and shown, or typed by an
    operator), so the person must choose their own at their first sign-in."""
    roles = sorted(set(roles or ["user"]))
    if not USERNAME_RE.fullmatch(username):
        raise FieldError("username", "username must be 1-150 characters: letters, digits and . _ @ + -")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FieldError("password", f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    _check_roles(roles)
    if get_by_username(session, username) is not None:
        raise FieldError("username", f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), roles=roles,
                must_change_password=one_time)
    session.add(user)
    session.flush()
    return user


def get_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def get(session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def any_admin(session: Session) -> bool:
    return any(user.is_admin for user in session.scalars(select(User)))


def _check_roles(roles: list[str]) -> None:
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        raise FieldError("roles", f"unknown role {unknown[0]!r} (known: {', '.join(ROLES)})")


def require(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


def require_another_admin(session: Session, user: User) -> None:
    """Refuse when ``user`` is the last enabled admin (the change would leave nobody to run the console)."""
    # Lock first, and judge by the locked rows: ``populate_existing`` overwrites the session's
    # already-loaded User objects (the signed-in admin, the target) with what the lock returned.
    # Without it a concurrent, committed demotion of the other admin stayed invisible (the
    # identity map kept the stale roles) and two admins could demote each other at once.
    enabled = list(session.scalars(select(User).where(User.disabled.is_(False)).with_for_update()
                                   .execution_options(populate_existing=True)))
    if not user.is_admin or user.disabled:
        return
    if not any(other.is_admin and other.id != user.id for other in enabled):
        raise FieldError("roles", f"{user.username} is the last enabled admin; make someone else an admin first")


def set_roles(session: Session, user: User, roles: list[str]) -> User:
    roles = sorted(set(roles))
    _check_roles(roles)
    if not roles:
        raise FieldError("roles", "choose at least one role (user: their own account only)")
    if "admin" not in roles:
        require_another_admin(session, user)
    user.roles = roles
    return user


def set_disabled(session: Session, username: str, disabled: bool = True) -> User:
    user = get_by_username(session, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return set_user_disabled(session, user, disabled)


def set_user_disabled(session: Session, user: User, disabled: bool = True) -> User:
    """Disabling also ends every login session of theirs."""
    if disabled:
        require_another_admin(session, user)
        sessions.end_all(session, user.id)
    user.disabled = disabled
    return user


def delete_user(session: Session, user: User) -> None:
    """Delete a person. Their sessions, consents, codes, pending requests and refresh tokens go with
    them (ON DELETE CASCADE), so every app they connected stops at its next refresh; audit events
    keep their id. The last enabled admin cannot be deleted."""
    require_another_admin(session, user)
    session.delete(user)
    session.flush()


def set_password(session: Session, user: User, password: str, *, one_time: bool = False) -> None:
    """``one_time`` as in ``create_user``; a password of the person's own choosing clears it."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FieldError("password", f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = hash_password(password)
    user.must_change_password = one_time


def reset_password(session: Session, user: User, password: str) -> None:
    """An admin sets a new password: every session signed in with the old one ends, and since the
    admin knows it, it is a one-time password the person replaces at their next sign-in."""
    set_password(session, user, password, one_time=True)
    sessions.end_all(session, user.id)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user when the password is right and the account enabled, else None.

    Unknown usernames still pay one argon2 verification, so response time does not
    reveal which usernames exist. A hash made with older parameters is upgraded.
    """
    user = get_by_username(session, username)
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def usernames(session: Session, user_ids: Iterable[str]) -> dict[str, str]:
    """Usernames by user id (as text, as audit events carry them); strings that are no user id are skipped."""
    ids = set()
    for value in user_ids:
        try:
            ids.add(uuid.UUID(value))
        except (ValueError, TypeError):
            continue
    if not ids:
        return {}
    return {str(i): name for i, name in session.execute(select(User.id, User.username).where(User.id.in_(ids)))}
