"""Attacks from the security review of the console, account pages and token changes.

Each test here failed before the fix it names.
"""

from __future__ import annotations

import uuid

import pytest

from authserver.db import Database
from authserver.errors import AppError
from authserver.users import repository as users
from tests.admin_pages import make_user


def test_two_admins_demoting_each_other_at_once_leave_one_admin(db: Database, backend: str) -> None:
    """Last-admin rule under concurrency (PostgreSQL, READ COMMITTED).

    Admin B's request has already loaded B (the signed-in person) when admin A's request, which
    demotes B, commits. B's request then demotes A: the check's FOR UPDATE query returns B's new
    row, but without ``populate_existing`` the session's identity map keeps B's stale roles, so B
    still counted as "another admin" and both demotions succeeded: nobody could run the console.
    """
    if backend == "sqlite":
        pytest.skip("SQLite write transactions start with BEGIN IMMEDIATE: the two cannot interleave")
    a = uuid.UUID(make_user(db, "alice", ["admin"]))
    b = uuid.UUID(make_user(db, "bob", ["admin"]))
    with db.session() as bobs:
        acting = users.require(bobs, b)  # B's request: who is signed in (pages.require_signed_in)
        target = users.require(bobs, a)
        assert acting.is_admin and target.is_admin
        with db.session() as alices:  # A demotes B, committed while B's request is under way
            users.set_roles(alices, users.require(alices, b), ["user"])
        with pytest.raises(AppError, match="last enabled admin"):
            users.set_roles(bobs, target, ["user"])
    with db.read_session() as s:
        assert [u.username for u in users.list_users(s) if u.is_admin and not u.disabled] == ["alice"]


def test_disabling_an_admin_demoted_meanwhile_keeps_one_admin(db: Database, backend: str) -> None:
    """The same race through disable: B's request disables A while A's request demotes B."""
    if backend == "sqlite":
        pytest.skip("SQLite write transactions start with BEGIN IMMEDIATE: the two cannot interleave")
    a = uuid.UUID(make_user(db, "alice", ["admin"]))
    b = uuid.UUID(make_user(db, "bob", ["admin"]))
    with db.session() as bobs:
        acting = users.require(bobs, b)  # held, as the request holds who is signed in
        target = users.require(bobs, a)
        with db.session() as alices:
            users.set_roles(alices, users.require(alices, b), ["user"])
        with pytest.raises(AppError, match="last enabled admin"):
            users.set_user_disabled(bobs, target, True)
        assert not acting.is_admin  # the lock's rows replaced the stale one
    with db.read_session() as s:
        assert [u.username for u in users.list_users(s) if u.is_admin and not u.disabled] == ["alice"]
