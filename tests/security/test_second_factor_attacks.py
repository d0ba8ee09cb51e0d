"""Attacks on two-step verification, on SQLite and PostgreSQL: a second-step cookie carried to
another browser, a step of one authorization request used for another, skipping the step, an
expired step, wrong codes spending the password's throttle budget, and a secret moved between
accounts. Where an attacker would need a CSRF token, the test forges a valid one (with the
server's own key) so that the binding itself, not the CSRF check, is what is tested."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from authserver.mfa import totp
from authserver.tokens.purge import purge
from tests.admin_pages import browser, make_user, sign_in
from tests.conftest import ISSUER, TEST_SECRET, make_settings
from tests.oauth_helpers import authorize_params, execute, interaction_page, login, pkce_pair, query, seed, sql
from tests.second_factor_helpers import Clock, Enrolled, code_step, enrol, password_step, pinned_clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return pinned_clock(monkeypatch)


@pytest.fixture
def carol(app: Any, client: TestClient, db: Database, clock: Clock) -> Enrolled:
    """carol has TOTP set up (in the ``client`` browser); the clock is one step on."""
    make_user(db, "carol")
    sign_in(client, "carol", next_path="/account")
    enrolled = enrol(client, clock)
    clock.advance()
    return enrolled


def _cookies(app: Any) -> Any:
    return app.state.services.cookies


def _signed_in(client: TestClient) -> bool:
    return client.get("/account").status_code == 200


def test_a_second_step_cookie_is_useless_in_another_browser(app: Any, carol: Enrolled, clock: Clock) -> None:
    cookies = _cookies(app)
    with browser(app) as victim, browser(app) as attacker:
        assert password_step(victim, "carol").status_code == 303
        stolen = victim.cookies.get(cookies.second_step_name)
        assert stolen
        attacker.get("/login")  # the attacker's own browser cookie
        attacker.cookies.set(cookies.second_step_name, stolen)
        assert 'name="password"' in attacker.get("/login?next=/account").text  # no code page for it
        own_browser = attacker.cookies.get(cookies.browser_name)
        forged = cookies.csrf_token("second-factor", own_browser)
        answer = attacker.post("/login/second-factor", data={"csrf": forged, "code": carol.code(clock.now),
                                                            "next": "/account"})
        assert answer.status_code == 401 and 'name="password"' in answer.text and not _signed_in(attacker)
        # The attempt spent nothing of the victim's step: it finishes with the same code.
        page = victim.get("/login?next=/account")
        assert code_step(victim, page.text, carol.code(clock.now)).status_code == 303 and _signed_in(victim)


def test_skipping_the_second_step_reaches_no_session_and_no_consent(app: Any, carol: Enrolled, db: Database) -> None:
    world = seed(db)
    cookies = _cookies(app)
    with browser(app) as other:
        _, challenge = pkce_pair()
        page = interaction_page(other, authorize_params(world.public_id, challenge))
        interaction = login(other, page.text, "carol").headers["location"]
        rid = interaction.rsplit("/", 1)[1]
        assert not _signed_in(other) and other.get("/admin").status_code == 303
        assert 'name="code"' in other.get(interaction).text  # the request waits for the code
        forged = cookies.csrf_token("consent", rid, other.cookies.get(cookies.browser_name))
        consent = other.post(f"{interaction}/consent", data={"csrf": forged, "decision": "allow",
                                                             "scope": "read:calendar"})
        assert consent.status_code == 403
        silent = other.get("/authorize", params=authorize_params(world.public_id, challenge, prompt="none"))
        assert query(silent.headers["location"])["error"] == "login_required"
    assert sql(db, "SELECT COUNT(*) FROM authorization_codes")[0][0] == 0
    assert sql(db, "SELECT status FROM authorization_requests WHERE user_id IS NOT NULL") == []


def test_a_step_begun_for_one_request_cannot_finish_another(app: Any, carol: Enrolled, db: Database,
                                                           clock: Clock) -> None:
    world = seed(db)
    cookies = _cookies(app)
    with browser(app) as other:
        _, challenge = pkce_pair()
        first = interaction_page(other, authorize_params(world.public_id, challenge))
        login(other, first.text, "carol")
        second = other.get("/authorize", params=authorize_params(world.public_id, challenge)).headers["location"]
        assert 'name="password"' in other.get(second).text  # its own sign-in, not the other's code page
        rid = second.rsplit("/", 1)[1]
        forged = cookies.csrf_token("second-factor", rid, other.cookies.get(cookies.browser_name))
        answer = other.post(f"{second}/second-factor", data={"csrf": forged, "code": carol.code(clock.now)})
        assert answer.status_code == 401 and 'name="password"' in answer.text and not _signed_in(other)
    assert sql(db, "SELECT COUNT(*) FROM authorization_requests WHERE status = 'authenticated'")[0][0] == 0


def test_an_expired_step_asks_for_the_password_again(app: Any, carol: Enrolled, db: Database, clock: Clock) -> None:
    with browser(app) as other:
        page = other.get(password_step(other, "carol").headers["location"])
        execute(db, "UPDATE second_steps SET expires_at = :t", t=datetime.now(UTC) - timedelta(seconds=1))
        assert 'name="password"' in other.get("/login?next=/account").text
        late = code_step(other, page.text, carol.code(clock.now))
        assert late.status_code == 401 and "Sign in again" in late.text and not _signed_in(other)
    with db.session() as session:  # abandoned steps do not pile up
        assert purge(session, datetime.now(UTC), 10)["second_steps"] == 1
    assert sql(db, "SELECT COUNT(*) FROM second_steps")[0][0] == 0


def test_wrong_codes_spend_the_same_budget_as_wrong_passwords(db_url: str, db: Database, clock: Clock) -> None:
    app = create_app(make_settings(db_url, signin_failure_limit=2, signin_account_failure_limit=100), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        make_user(db, "carol")
        sign_in(client, "carol", next_path="/account")
        enrolled = enrol(client, clock)
        clock.advance()
        with browser(app) as other:
            page = other.get(password_step(other, "carol").headers["location"])
            for _ in range(2):
                assert code_step(other, page.text, "000000").status_code == 401
        with browser(app) as again:  # even the right password now waits: the guesser gets no fresh codes
            refused = password_step(again, "carol")
            assert refused.status_code == 401 and "Too many failed sign-ins" in refused.text
        assert enrolled.secret  # (the right code would be refused too: see test_second_factor)


def test_one_code_raced_from_two_browsers_signs_in_only_one(app: Any, carol: Enrolled, db: Database,
                                                            clock: Clock) -> None:
    """The victim and an onlooker who saw the code and knows the password submit it at the same
    moment: the conditional UPDATE on the last time step lets exactly one through."""
    with browser(app) as first, browser(app) as second:
        pages = [c.get(password_step(c, "carol").headers["location"]).text for c in (first, second)]
        code = carol.code(clock.now)
        start = threading.Barrier(2)
        answers: list[int] = []

        def submit(client: TestClient, page: str) -> None:
            start.wait()
            answers.append(code_step(client, page, code).status_code)

        threads = [threading.Thread(target=submit, args=pair) for pair in zip((first, second), pages, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(answers) == [303, 401]
        assert [_signed_in(first), _signed_in(second)].count(True) == 1


def test_a_secret_copied_to_another_account_does_not_decrypt() -> None:
    import uuid

    sealer = totp.Sealer(TEST_SECRET)
    alice, mallory = uuid.uuid4(), uuid.uuid4()
    blob = sealer.seal(alice, "JBSWY3DPEHPK3PXP")
    assert sealer.open(alice, blob) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(InvalidTag):
        sealer.open(mallory, blob)
    with pytest.raises(InvalidTag):
        totp.Sealer(TEST_SECRET + "-other").open(alice, blob)


def test_leaving_the_code_page_of_a_request_asks_for_the_password_again(app: Any, carol: Enrolled,
                                                                        db: Database) -> None:
    world = seed(db)
    with browser(app) as other:
        _, challenge = pkce_pair()
        page = interaction_page(other, authorize_params(world.public_id, challenge))
        interaction = login(other, page.text, "carol").headers["location"]
        assert 'name="code"' in other.get(interaction).text
        back = other.get(f"{interaction}?again=1")
        assert 'name="password"' in back.text and not _signed_in(other)
        assert 'name="password"' in other.get(interaction).text  # the step's cookie is gone
