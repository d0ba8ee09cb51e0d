"""Sign-in throttling (interaction.signin): per typed username and address, per username from
anywhere, per address; on both databases and both limit back ends.

Small budgets and waits come from settings, so no test sleeps longer than a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from authserver.audit.models import AuditEvent
from authserver.db import Database
from authserver.interaction.signin import BAD_LOGIN, THROTTLED, Gate
from authserver.users import passwords
from tests.oauth_helpers import PASSWORD, seed
from tests.security.conftest import csrf_of, error_of, headers, limited_client, sign_in

WRONG = "not the password"
# Back-off long enough that it never runs out during a test.
SLOW = {"signin_backoff_seconds": 60, "signin_lock_seconds": 120}


def events(db: Database, name: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.event == name)) or 0


def all_events(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every argon2 verification that runs (its cost is what timing would show)."""
    seen: list[str] = []
    real = passwords.verify_password

    def counted(stored: str | None, password: str) -> bool:
        seen.append("dummy" if stored is None else "real")
        return real(stored, password)

    monkeypatch.setattr("authserver.interaction.signin.verify_password", counted)
    yield seen


def test_password_guessing_spread_over_many_addresses_is_slowed_per_account(
        db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    seed(db)
    with limited_client(db_url, db, limit_backend, signin_failure_limit=5, signin_account_failure_limit=3,
                        **SLOW) as client:
        # A new address for every guess: the username + address rule never sees a second failure.
        for n in range(3):
            response = sign_in(client, "alice", WRONG, f"198.51.100.{n + 1}")
            assert response.status_code == 401 and error_of(response.text) == BAD_LOGIN
        response = sign_in(client, "alice", PASSWORD, "198.51.100.50")  # even the right password waits
        assert response.status_code == 401 and error_of(response.text) == THROTTLED
        assert sign_in(client, "bob", PASSWORD, "198.51.100.51").status_code == 303  # other accounts are not
    assert events(db, "login.failed") == 3


def test_unknown_and_real_usernames_get_identical_answers_under_the_lock(
        db_url: str, db: Database, limit_backend: dict[str, Any], verifications: list[str]) -> None:
    seed(db)
    answers: dict[str, list[tuple[int, str | None]]] = {}
    work: dict[str, int] = {}
    with limited_client(db_url, db, limit_backend, signin_failure_limit=10, signin_account_failure_limit=2,
                        **SLOW) as client:
        for username in ("alice", "nobody-by-this-name"):
            before = len(verifications)
            answers[username] = [(r.status_code, error_of(r.text)) for r in (
                sign_in(client, username, WRONG, f"203.0.113.{i}") for i in range(1, 6))]
            work[username] = len(verifications) - before
    assert answers["alice"] == answers["nobody-by-this-name"] == [
        (401, BAD_LOGIN), (401, BAD_LOGIN), (401, THROTTLED), (401, THROTTLED), (401, THROTTLED)]
    # The same argon2 work for both (a dummy verification for the unknown name; none once throttled).
    assert work == {"alice": 2, "nobody-by-this-name": 2}
    assert verifications == ["real", "real", "dummy", "dummy"]


def test_ipv6_addresses_in_one_64_share_a_limit(db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    seed(db)
    with limited_client(db_url, db, limit_backend, signin_failure_limit=2, signin_account_failure_limit=50,
                        **SLOW) as client:
        assert sign_in(client, "alice", WRONG, "2001:db8:1:2::1").status_code == 401
        assert sign_in(client, "alice", WRONG, "2001:db8:1:2:ffff:ffff:ffff:fffe").status_code == 401
        refused = sign_in(client, "alice", PASSWORD, "2001:db8:1:2:abcd::9")  # a third address of the /64
        assert refused.status_code == 401 and error_of(refused.text) == THROTTLED
        assert sign_in(client, "alice", PASSWORD, "2001:db8:1:3::1").status_code == 303  # the next /64


def test_one_persons_failures_behind_a_shared_egress_do_not_lock_out_another_account(
        db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    """Everyone of a hosted MCP client's users comes from its proxy's one address."""
    seed(db)
    egress = "192.0.2.80"
    with limited_client(db_url, db, limit_backend, signin_failure_limit=3, signin_account_failure_limit=10,
                        signin_address_failure_limit=50, **SLOW) as client:
        for _ in range(6):
            sign_in(client, "alice", WRONG, egress)
        assert error_of(sign_in(client, "alice", WRONG, egress).text) == THROTTLED
        assert sign_in(client, "bob", PASSWORD, egress).status_code == 303
        # Alice's own failures slowed only her from that address; her account is not locked elsewhere.
        assert sign_in(client, "alice", PASSWORD, "198.51.100.9").status_code == 303


def test_the_account_page_tells_the_owner_after_a_lock(db_url: str, db: Database,
                                                        limit_backend: dict[str, Any]) -> None:
    seed(db)
    # The first wait is already the longest: the second failure engages the lock.
    with limited_client(db_url, db, limit_backend, signin_failure_limit=10, signin_account_failure_limit=2,
                        signin_backoff_seconds=0.5, signin_lock_seconds=0.5) as client:
        assert sign_in(client, "alice", PASSWORD, "192.0.2.1").status_code == 303
        assert "sign-in-paused" not in client.get("/account").text
        for n in range(2):
            assert sign_in(client, "alice", WRONG, f"198.51.100.{n + 1}").status_code == 401
        assert events(db, "login.locked") == 1
        time.sleep(0.6)
        assert sign_in(client, "alice", PASSWORD, "192.0.2.1").status_code == 303
        page = client.get("/account").text
        assert "sign-in-paused" in page and "after 2 failed attempts" in page
        # Told once: the sign-in after that one no longer shows it.
        assert sign_in(client, "alice", PASSWORD, "192.0.2.1").status_code == 303
        assert "sign-in-paused" not in client.get("/account").text


def test_password_guesses_through_a_stolen_session_engage_the_account_lock(
        db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    """A stolen session cookie gives no fresh budget: wrong current passwords at /account/password
    count against the account like wrong sign-ins, from every address."""
    seed(db)
    with limited_client(db_url, db, limit_backend, signin_failure_limit=10, signin_account_failure_limit=2,
                        signin_backoff_seconds=60, signin_lock_seconds=60) as thief:  # the first wait locks
        assert sign_in(thief, "alice", PASSWORD, "203.0.113.66").status_code == 303
        for _ in range(2):
            page = thief.get("/account/password", headers=headers("203.0.113.66")).text
            form = page.split('action="/account/password"')[1]
            response = thief.post("/account/password", headers=headers("203.0.113.66"), data={
                "csrf": csrf_of(form), "current_password": WRONG, "new_password": "a new password",
                "confirm_password": "a new password"})
            assert response.status_code == 400 and "That is not your current password." in response.text
        assert events(db, "login.locked") == 1
        # The owner, elsewhere, waits like after any lock (nothing says why to an unknown browser).
        response = sign_in(thief, "alice", PASSWORD, "192.0.2.1")
        assert response.status_code == 401 and error_of(response.text) == THROTTLED
    assert events(db, "password.change_failed") == 2 and events(db, "password.changed") == 0


def test_throttled_sign_ins_stop_adding_audit_rows(db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    seed(db)
    with limited_client(db_url, db, limit_backend, signin_failure_limit=1, signin_account_failure_limit=50,
                        **SLOW) as client:
        assert sign_in(client, "alice", WRONG, "198.51.100.7").status_code == 401
        before = all_events(db)
        for _ in range(12):
            assert error_of(sign_in(client, "alice", WRONG, "198.51.100.7").text) == THROTTLED
        # One row when throttling started and one at the 10th throttled attempt, with the count.
        assert all_events(db) - before == 2
        with db.session() as session:
            rows = session.scalars(select(AuditEvent).where(AuditEvent.event == "login.throttled")
                                   .order_by(AuditEvent.id)).all()
            assert [(r.detail["throttled_attempts"], r.detail["rule"]) for r in rows] == [(1, "pair"), (10, "pair")]
    assert events(db, "login.failed") == 1


def test_the_back_off_doubles_and_then_lets_the_next_attempt_through(
        db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    """The gate itself (no argon2, so the waits can be short and still measured)."""
    with limited_client(db_url, db, limit_backend, signin_failure_limit=1, signin_account_failure_limit=50,
                        signin_backoff_seconds=0.5, signin_lock_seconds=10) as client:
        throttle = client.app.state.services.signin_throttle

        def admitted() -> bool:
            return throttle.admit("alice", "198.51.100.8").refused is None

        assert admitted()  # the 1st attempt: the next waits 0.5 s
        assert not admitted()
        time.sleep(0.55)
        assert admitted()  # the 2nd: the next waits 1 s
        time.sleep(0.55)
        assert not admitted()
        time.sleep(0.5)
        assert admitted()
        throttle.succeeded("alice", "198.51.100.8", Gate())  # a success clears this address's record
        assert admitted()
