"""Two-step verification (TOTP, RFC 6238) on SQLite and PostgreSQL: set up with a computed code,
every sign-in then needs a code, a replayed or wrong code is refused (and throttled), a recovery
code works once, the secret is never stored in clear, and turning it off needs the password."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from authserver.audit.models import AuditEvent
from authserver.db import Database
from authserver.mfa import steps
from tests.admin_pages import browser, csrf, make_user, sign_in
from tests.oauth_helpers import PASSWORD, sql
from tests.second_factor_helpers import Clock, code_step, enrol, form_of, password_step, pinned_clock, sign_in_with_code


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return pinned_clock(monkeypatch)


def _events(db: Database, name: str) -> list[AuditEvent]:
    with db.session() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))


def _signed_in(client: TestClient) -> bool:
    return client.get("/account").status_code == 200


def test_set_up_with_a_computed_code_then_every_sign_in_needs_a_code(app, client: TestClient, db: Database,
                                                                      clock: Clock) -> None:
    make_user(db, "carol")
    assert sign_in(client, "carol", next_path="/account").status_code == 303
    assert "Two-step verification is off" in client.get("/account/two-step").text
    enrolled = enrol(client, clock)
    assert "Two-step verification is on" in client.get("/account/two-step").text
    [event] = _events(db, "mfa.enrolled")
    assert event.detail == {"method": "totp", "recovery_codes": 10}

    clock.advance()
    with browser(app) as other:
        first = password_step(other, "carol")
        # The password alone starts no session: a code is asked first, in this browser.
        assert first.status_code == 303 and first.headers["location"] == "/login?next=/account"
        assert "authserver_session" not in first.cookies and not _signed_in(other)
        page = other.get(first.headers["location"])
        assert page.status_code == 200 and 'name="code"' in page.text and 'name="password"' not in page.text
        done = code_step(other, page.text, enrolled.code(clock.now))
        assert done.status_code == 303 and done.headers["location"] == "/account"
        assert _signed_in(other)
    [succeeded] = [e for e in _events(db, "login.succeeded") if e.detail.get("amr") == ["pwd", "otp", "mfa"]]
    assert succeeded.detail["username"] == "carol"
    assert [e.detail for e in _events(db, "mfa.challenged")] == [{}]


def test_a_wrong_code_is_refused_and_wrong_codes_are_throttled(db_url: str, db: Database, clock: Clock) -> None:
    from authserver.app import create_app
    from tests.conftest import ISSUER, make_settings

    app = create_app(make_settings(db_url, signin_failure_limit=2, signin_account_failure_limit=100), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        make_user(db, "carol")
        sign_in(client, "carol", next_path="/account")
        enrolled = enrol(client, clock)
    clock.advance()
    with browser(app) as other:
        first = password_step(other, "carol")
        page = other.get(first.headers["location"])
        wrong = str((int(enrolled.code(clock.now)) + 1) % 1_000_000).zfill(6)
        for _ in range(2):
            refused = code_step(other, page.text, wrong)
            assert refused.status_code == 401 and "That code is not right" in refused.text
            assert not _signed_in(other)
        # Past the free failures the right code waits too: codes cannot be guessed quickly.
        throttled = code_step(other, page.text, enrolled.code(clock.now))
        assert throttled.status_code == 401 and "Too many failed sign-ins" in throttled.text
        assert not _signed_in(other)
    assert len(_events(db, "mfa.failed")) == 2 and len(_events(db, "mfa.throttled")) == 1
    assert [e.detail["amr"] for e in _events(db, "login.succeeded")] == [["pwd"]]  # only the set-up's sign-in


def test_a_replayed_code_is_refused(app, client: TestClient, db: Database, clock: Clock) -> None:
    make_user(db, "carol")
    sign_in(client, "carol", next_path="/account")
    enrolled = enrol(client, clock)
    used_at_enrolment = enrolled.code(clock.now)
    with browser(app) as other:
        # Still inside its 30 s step (and the window), but that step was used to confirm.
        replayed = sign_in_with_code(other, "carol", used_at_enrolment)
        assert replayed.status_code == 401 and "used already" in replayed.text and not _signed_in(other)
    clock.advance()
    fresh = enrolled.code(clock.now)
    with browser(app) as other:
        assert sign_in_with_code(other, "carol", fresh).status_code == 303 and _signed_in(other)
    with browser(app) as third:
        again = sign_in_with_code(third, "carol", fresh)  # the same code, seen over a shoulder
        assert again.status_code == 401 and not _signed_in(third)
    clock.advance(30)
    with browser(app) as fourth:  # an older step than the last used one is refused too
        older = sign_in_with_code(fourth, "carol", enrolled.code(clock.now - timedelta(seconds=30)))
        assert older.status_code == 401 and not _signed_in(fourth)
        assert code_step(fourth, older.text, enrolled.code(clock.now)).status_code == 303 and _signed_in(fourth)


def test_a_recovery_code_works_once(app, client: TestClient, db: Database, clock: Clock) -> None:
    make_user(db, "carol")
    sign_in(client, "carol", next_path="/account")
    enrolled = enrol(client, clock)
    code = enrolled.recovery_codes[3]
    with browser(app) as other:
        done = sign_in_with_code(other, "carol", code.upper().replace("-", " "))  # typed loosely
        assert done.status_code == 303 and _signed_in(other)
    [used] = _events(db, "mfa.recovery_used")
    assert used.detail == {"recovery_codes_left": 9}
    assert [e.detail["amr"] for e in _events(db, "login.succeeded") if e.detail.get("amr")][-1] == ["pwd", "mfa"]
    with browser(app) as other:
        again = sign_in_with_code(other, "carol", code)
        assert again.status_code == 401 and not _signed_in(other)
    assert "Recovery codes left: 9." in client.get("/account/two-step").text
    # The person's own Activity page says what happened (a wrong code means the password is known).
    activity = client.get("/account/activity").text
    assert "You turned on two-step verification" in activity
    assert "A recovery code was used to sign in from testclient (9 left)" in activity
    assert "A wrong two-step verification code was entered from testclient" in activity


def test_the_secret_and_the_recovery_codes_are_not_stored_in_clear(client: TestClient, db: Database,
                                                                   clock: Clock) -> None:
    make_user(db, "carol")
    sign_in(client, "carol", next_path="/account")
    enrolled = enrol(client, clock)
    raw = base64.b32decode(enrolled.secret)
    stored = sql(db, "SELECT * FROM totp_factors")
    assert len(stored) == 1
    for value in stored[0]:
        blob = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        assert enrolled.secret.encode() not in blob and raw not in blob
        assert enrolled.secret.lower().encode() not in blob.lower()
    everything = json.dumps([sql(db, f"SELECT * FROM {t}") for t in ("recovery_codes", "audit_events")],
                            default=str)
    for code in enrolled.recovery_codes:
        assert code not in everything and code.replace("-", "") not in everything
    assert enrolled.secret not in everything
    assert len(sql(db, "SELECT code_hash FROM recovery_codes WHERE used_at IS NULL")) == 10


def test_new_recovery_codes_and_turning_it_off_need_the_password_or_a_code(app, client: TestClient, db: Database,
                                                                          clock: Clock) -> None:
    make_user(db, "carol")
    sign_in(client, "carol", next_path="/account")
    enrolled = enrol(client, clock)
    page = client.get("/account/two-step")
    data = form_of(page.text, "/account/two-step/recovery-codes")
    refused = client.post("/account/two-step/recovery-codes", data={**data, "credential": "not my password"})
    assert refused.status_code == 400 and "not your password" in refused.text
    clock.advance()
    made = client.post("/account/two-step/recovery-codes", data={**data, "credential": enrolled.code(clock.now)})
    assert made.status_code == 200 and "recovery-codes" in made.text
    with browser(app) as other:  # the old set stopped working
        assert sign_in_with_code(other, "carol", enrolled.recovery_codes[0]).status_code == 401

    data = form_of(client.get("/account/two-step").text, "/account/two-step/disable")
    no_csrf = client.post("/account/two-step/disable", data={"credential": PASSWORD})
    assert no_csrf.status_code == 403
    assert client.post("/account/two-step/disable", data={**data, "credential": "wrong"}).status_code == 400
    off = client.post("/account/two-step/disable", data={**data, "credential": PASSWORD})
    assert off.status_code == 303 and "Two-step verification is off" in client.get(off.headers["location"]).text
    [disabled] = _events(db, "mfa.disabled")
    assert disabled.detail == {"confirmed_with": "password"}
    assert [e.detail.get("action") for e in _events(db, "mfa.failed")] == ["recovery", None, "disable"]
    assert sql(db, "SELECT COUNT(*) FROM totp_factors")[0][0] == 0
    assert sql(db, "SELECT COUNT(*) FROM recovery_codes")[0][0] == 0
    with browser(app) as other:  # password only again
        assert password_step(other, "carol").headers["location"] == "/account" and _signed_in(other)


def test_five_wrong_codes_end_the_step_and_the_password_is_asked_again(app, client: TestClient, db: Database,
                                                                     clock: Clock) -> None:
    make_user(db, "carol")
    sign_in(client, "carol", next_path="/account")
    enrol(client, clock)
    with browser(app) as other:
        first = password_step(other, "carol")
        page = other.get(first.headers["location"])
        for attempt in range(1, steps.MAX_ATTEMPTS + 1):
            answer = code_step(other, page.text, "000000" if attempt % 2 else "aaaa-bbbb-cccc")
            assert answer.status_code == 401
        assert 'name="password"' in answer.text and "Sign in again" in answer.text
        assert 'name="password"' in other.get("/login?next=/account").text
    assert sql(db, "SELECT COUNT(*) FROM second_steps")[0][0] == 0


def test_the_code_page_leads_back_to_the_password_for_another_account(app, client: TestClient, db: Database,
                                                                      clock: Clock) -> None:
    make_user(db, "carol")
    make_user(db, "dave")
    sign_in(client, "carol", next_path="/account")
    enrol(client, clock)
    with browser(app) as other:
        page = other.get(password_step(other, "carol").headers["location"])
        link = re.search(r'<a href="([^"]+)">Sign in with another account</a>', page.text)
        assert link and link.group(1) == "/login?next=/account&amp;again=1"
        back = other.get("/login?next=/account&again=1")
        assert 'name="password"' in back.text and not other.cookies.get("authserver_second_step")
        assert password_step(other, "dave").headers["location"] == "/account" and _signed_in(other)
        assert other.get("/account").text.count("Signed in as dave") == 1


def test_an_admin_turns_off_a_lost_second_factor_and_the_person_is_signed_out(app, client: TestClient,
                                                                           db: Database, clock: Clock) -> None:
    carol = make_user(db, "carol")
    make_user(db, "root", "admin")
    sign_in(client, "carol", next_path="/account")
    enrol(client, clock)
    with browser(app, "root") as root, browser(app) as auditor:
        assert "On (authenticator app), 10 recovery codes left." in root.get(f"/admin/users/{carol}").text
        make_user(db, "eve", "auditor")
        sign_in(auditor, "eve", next_path="/admin")
        token = csrf(auditor, f"/admin/users/{carol}")
        assert auditor.post(f"/admin/users/{carol}/second-factor", data={"csrf": token}).status_code == 403
        assert sql(db, "SELECT COUNT(*) FROM totp_factors")[0][0] == 1
        done = root.post(f"/admin/users/{carol}/second-factor", data={"csrf": csrf(root, f"/admin/users/{carol}")})
        assert done.status_code == 303 and 'id="second-factor-status">Off.' in root.get(done.headers["location"]).text
    assert not _signed_in(client)  # carol's session ended
    [event] = _events(db, "user.second_factor_reset")
    assert event.detail["username"] == "carol" and event.detail["sessions_ended"] == 1
    with browser(app) as other:
        assert password_step(other, "carol").headers["location"] == "/account" and _signed_in(other)


def test_the_cli_turns_off_a_lost_second_factor(client: TestClient, db: Database, db_url: str, clock: Clock,
                                                tmp_path: Path) -> None:
    from tests.test_cli import Cli, _assert_one_line_error, _env

    make_user(db, "carol")
    sign_in(client, "carol", next_path="/account")
    enrol(client, clock)
    cli = Cli(_env(db_url), tmp_path)
    done = cli.json("users", "reset-second-factor", "carol")
    assert done["username"] == "carol" and done["sessions_ended"] == 1
    assert not _signed_in(client) and sql(db, "SELECT COUNT(*) FROM totp_factors")[0][0] == 0
    [event] = _events(db, "user.second_factor_reset")
    assert event.actor == "cli" and event.detail == {"username": "carol", "sessions_ended": 1}
    _assert_one_line_error(cli.run("users", "reset-second-factor", "carol"), "has no two-step verification")
    _assert_one_line_error(cli.run("users", "reset-second-factor", "nobody"), "no user")
