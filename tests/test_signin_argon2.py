"""Sign-in's argon2id work: bounded in number, and never inside a database transaction.

The hasher is wrapped to look at the world while a verification runs: how many run at once,
whether any transaction is open on the database, and what a change made meanwhile does.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from authserver.db import Database
from authserver.users import passwords
from authserver.users import repository as users
from tests.oauth_helpers import PASSWORD, authorize_params, count, interaction_page, login, pkce_pair, seed, sql


@pytest.fixture
def during_verify(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Callable[[], Any]]]:
    """Callbacks run inside every argon2 verification, before the real one."""
    hooks: list[Callable[[], Any]] = []
    real = passwords.HASHER

    def verify(stored: str, password: str) -> bool:
        for hook in hooks:
            hook()
        return real.verify(stored, password)

    monkeypatch.setattr(passwords, "HASHER", Hasher(real, verify=verify))
    yield hooks


class Hasher:
    """argon2's PasswordHasher with some methods replaced (its own attributes are read-only)."""

    def __init__(self, real: Any, **replaced: Callable[..., Any]) -> None:
        self._real, self._replaced = real, replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced.get(name) or getattr(self._real, name)


def open_transactions(db: Database) -> str | None:
    """What another connection sees: why it could not write now, or None when nothing holds a transaction."""
    url = make_url(db.url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database or "", timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # fails at once while another connection holds the write lock
            conn.execute("ROLLBACK")
            return None
        except sqlite3.OperationalError as exc:
            return str(exc)
        finally:
            conn.close()
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database,
                         autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL").fetchone()
    return f"{row[0]} transactions open" if row and row[0] else None


def login_page(client: TestClient, db: Database):  # type: ignore[no-untyped-def]
    world = seed(db)
    _, challenge = pkce_pair()
    return interaction_page(client, authorize_params(world.public_id, challenge))


def test_no_transaction_is_open_while_the_password_is_verified(client: TestClient, db: Database,
                                                              during_verify: list[Callable[[], Any]]) -> None:
    page = login_page(client, db)
    seen: list[str | None] = []
    during_verify.append(lambda: seen.append(open_transactions(db)))
    assert login(client, page.text).status_code == 303  # signed in
    assert login(client, login_page_again(client, db).text, password="wrong password").status_code == 401
    assert login(client, login_page_again(client, db).text, username="nobody").status_code == 401
    # The stand-alone sign-in page too.
    form_page = client.get("/login")
    csrf = form_page.text.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/login", data={"csrf": csrf, "username": "alice", "password": PASSWORD,
                                       "next": "/account"}).status_code == 303
    assert seen == [None, None, None, None]  # the unknown username paid its (dummy) verification too


def login_page_again(client: TestClient, db: Database):  # type: ignore[no-untyped-def]
    client.cookies.clear()
    _, challenge = pkce_pair()
    public_id = sql(db, "SELECT client_id FROM clients WHERE client_id NOT LIKE 'https:%' "
                        "AND token_endpoint_auth_method = 'none'")[0][0]
    return interaction_page(client, authorize_params(public_id, challenge))


def test_attempts_racing_a_verification_learn_no_more_verdicts_than_the_budget(
        client: TestClient, db: Database, during_verify: list[Callable[[], Any]]) -> None:
    """An attempt takes its place in the throttle before argon2 runs: attempts racing the first
    one's verification (on any node) find the budget spent and learn nothing, even with the right
    password."""
    page = login_page(client, db)
    services = client.app.state.services
    racing: list[str | None] = []

    def attempts_meanwhile() -> None:
        if not racing:
            for _ in range(services.settings.signin_failure_limit):
                racing.append(services.signin_throttle.admit("alice", "testclient").refused)

    during_verify.append(attempts_meanwhile)
    assert login(client, page.text, password="wrong password").status_code == 401
    # The first attempt and four racing ones spent the budget of 5; the fifth racing one was refused.
    assert racing == [None, None, None, None, "pair"]
    response = login(client, login_page_again(client, db).text)
    assert response.status_code == 401 and "Too many failed sign-ins" in response.text
    assert count(db, "login_sessions") == 0
    assert sql(db, "SELECT count(*) FROM audit_events WHERE event = 'login.failed'") == [(1,)]


def test_an_account_disabled_during_the_verification_does_not_sign_in(client: TestClient, db: Database,
                                                                      during_verify: list[Callable[[], Any]]) -> None:
    page = login_page(client, db)

    def disable() -> None:
        with db.session() as s:
            users.require(s, users.get_by_username(s, "alice").id).disabled = True  # type: ignore[union-attr]

    during_verify.append(disable)
    response = login(client, page.text)
    assert response.status_code == 401 and "do not match" in response.text
    assert count(db, "login_sessions") == 0
    assert sql(db, "SELECT event FROM audit_events") == [("login.failed",)]


def test_a_password_changed_during_the_verification_does_not_sign_in(client: TestClient, db: Database,
                                                                    during_verify: list[Callable[[], Any]]) -> None:
    page = login_page(client, db)

    def change() -> None:
        with db.session() as s:
            users.set_password(s, users.get_by_username(s, "alice"), "a brand new password")  # type: ignore[arg-type]

    during_verify.append(change)
    assert login(client, page.text).status_code == 401  # the old password, right when it was read
    assert count(db, "login_sessions") == 0


def test_no_more_argon2_computations_at_once_than_the_pool_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    size = passwords.configure(2)
    assert size == 2
    stored = passwords.hash_password(PASSWORD)
    active = peak = 0
    lock = threading.Lock()
    real = passwords.HASHER

    def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            try:
                return fn(*args)
            finally:
                with lock:
                    active -= 1
        return run

    monkeypatch.setattr(passwords, "HASHER", Hasher(real, verify=counted(real.verify), hash=counted(real.hash)))
    callers = 8
    start = threading.Barrier(callers)
    results: list[bool] = []

    def sign_in(i: int) -> None:
        start.wait()
        if i % 4 == 3:
            passwords.hash_password("another password")
            results.append(True)
        else:
            results.append(passwords.verify_password(stored if i % 2 else None, PASSWORD) == bool(i % 2))

    threads = [threading.Thread(target=sign_in, args=(i,)) for i in range(callers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        passwords.configure()
    assert results == [True] * callers
    assert 1 <= peak <= 2


def test_the_pool_is_one_computation_per_usable_cpu_by_default() -> None:
    import os

    assert passwords.default_concurrency() == max(1, len(os.sched_getaffinity(0)))
    assert passwords.configure() == passwords.default_concurrency()
