"""Attacks from the security review of the console, account pages and token changes.

Each test here failed before the fix it names.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from authserver.db import Database, utcnow
from authserver.errors import AppError
from authserver.grants import service as grants
from authserver.tokens import codes, lookup
from authserver.users import repository as users
from tests.admin_pages import make_user
from tests.oauth_helpers import RESOURCE, authorize_params, exchange, pkce_pair, query, run_flow, seed, sql, user_id


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


# --- A code exchange racing a disconnect -------------------------------------------------------

def test_a_code_exchange_racing_a_disconnect_leaves_the_app_nothing(client: TestClient, app: FastAPI,
                                                                    db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exchange read the consent's cut-off before the disconnect committed, then issued tokens.

    Before the fix the consent row was read without a lock: on PostgreSQL a disconnect could run
    to completion between the exchange's check and its commit, and find neither the refresh
    family nor the access token the exchange was about to commit. The person saw the app
    disconnected while it kept a live refresh token and an access token that introspected active.
    """
    world = seed(db)
    verifier, challenge = pkce_pair()
    first = run_flow(client, authorize_params(world.confidential_id, challenge))
    assert exchange(client, query(first)["code"], verifier, world.confidential_id,
                    secret=world.confidential_secret).status_code == 200
    verifier, challenge = pkce_pair()
    code = query(run_flow(client, authorize_params(world.confidential_id, challenge)))["code"]  # silent
    alice = uuid.UUID(user_id(db, "alice"))

    checked, go = threading.Event(), threading.Event()
    real_consume = codes.consume

    def paused_consume(*args: Any, **kwargs: Any) -> bool:
        checked.set()  # the exchange has passed its disconnect check
        assert go.wait(10)
        return real_consume(*args, **kwargs)

    monkeypatch.setattr(codes, "consume", paused_consume)
    answers: list[Any] = []
    exchanging = threading.Thread(target=lambda: answers.append(exchange(
        client, code, verifier, world.confidential_id, secret=world.confidential_secret)))
    exchanging.start()
    assert checked.wait(10)

    def disconnect() -> None:
        with db.session() as s:
            grants.disconnect(s, alice, world.confidential_id, RESOURCE, utcnow(), actor=str(alice), ip=None)

    disconnecting = threading.Thread(target=disconnect)
    disconnecting.start()
    disconnecting.join(1.0)  # with the fix it waits for the exchange's lock on the consent
    go.set()
    exchanging.join(10)
    disconnecting.join(10)
    assert not exchanging.is_alive() and not disconnecting.is_alive()
    monkeypatch.setattr(codes, "consume", real_consume)

    [response] = answers
    live = sql(db, "SELECT COUNT(*) FROM refresh_tokens WHERE revoked_at IS NULL")
    assert live == [(0,)], "the disconnected app kept a refresh token"
    if response.status_code == 200:
        with db.session() as s:
            info = lookup.access_token(s, app.state.services, response.json()["access_token"])
            assert info is not None and info.revoked, "the disconnected app kept an active access token"
