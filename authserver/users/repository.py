"""Users: creation with argon2id passwords, lookup, sign-in checks, disabling."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.errors import AppError, NotFound
from authserver.users.models import ROLES, User
from authserver.users.passwords import hash_password, needs_rehash, verify_password

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}$")
MIN_PASSWORD_LENGTH = 8


def create_user(session: Session, username: str, password: str, roles: list[str] | None = None) -> User:
    roles = sorted(set(roles or ["user"]))
    if not USERNAME_RE.match(username):
        raise AppError("username must be 1-150 characters: letters, digits and . _ @ + -")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AppError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        raise AppError(f"unknown role {unknown[0]!r} (known: {', '.join(ROLES)})")
    if get_by_username(session, username) is not None:
        raise AppError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), roles=roles)
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


def set_disabled(session: Session, username: str, disabled: bool = True) -> User:
    user = get_by_username(session, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    user.disabled = disabled
    return user


def set_password(session: Session, user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AppError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = hash_password(password)


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
