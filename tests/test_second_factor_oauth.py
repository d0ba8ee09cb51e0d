"""Two-step verification inside the MCP authorization code flow, on SQLite and PostgreSQL: the code
is asked between the password and the consent, access tokens carry ``auth_time`` and RFC 8176
``amr`` (kept on refresh), ``prompt=login`` and ``max_age`` force a fresh sign-in, and
AUTHSERVER_REQUIRE_SECOND_FACTOR sends a person without one to set it up before anything else."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from tests.admin_pages import browser, make_user, sign_in
from tests.conftest import ISSUER, make_settings
from tests.oauth_helpers import (
    REDIRECT,
    authorize_params,
    decide,
    exchange,
    execute,
    interaction_page,
    login,
    pkce_pair,
    query,
    seed,
)
from tests.second_factor_helpers import Clock, code_step, enrol, pinned_clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return pinned_clock(monkeypatch)


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _tokens(client: TestClient, client_id: str, verifier: str, location: str) -> dict[str, Any]:
    assert location.startswith(REDIRECT), location
    response = exchange(client, query(location)["code"], verifier, client_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _refresh(client: TestClient, client_id: str, token: str) -> dict[str, Any]:
    response = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                           "client_id": client_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_code_is_asked_between_password_and_consent_and_the_token_says_so(app, client: TestClient,
                                                                             db: Database, clock: Clock) -> None:
    world = seed(db)
    sign_in(client, "alice", next_path="/account")
    enrolled = enrol(client, clock)
    clock.advance()
    with browser(app) as other:
        verifier, challenge = pkce_pair()
        page = interaction_page(other, authorize_params(world.public_id, challenge))
        before = int(time.time())
        after_password = login(other, page.text, "alice")
        assert after_password.status_code == 303 and "authserver_session" not in after_password.cookies
        step = other.get(after_password.headers["location"])
        assert step.status_code == 200 and 'name="code"' in step.text and 'name="decision"' not in step.text
        after_code = code_step(other, step.text, enrolled.code(clock.now))
        assert after_code.status_code == 303 and after_code.headers["location"].startswith("/interaction/")
        consent = other.get(after_code.headers["location"])
        assert 'name="decision"' in consent.text
        body = _tokens(other, world.public_id, verifier, decide(other, consent.text).headers["location"])
    claims = _claims(body["access_token"])
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert before <= claims["auth_time"] <= int(time.time())
    # A refresh keeps how and when the person signed in (the rotation's fast path, then once more).
    refreshed = _refresh(client, world.public_id, body["refresh_token"])
    again = _refresh(client, world.public_id, refreshed["refresh_token"])
    for later in (refreshed, again):
        assert _claims(later["access_token"])["amr"] == ["pwd", "otp", "mfa"]
        assert _claims(later["access_token"])["auth_time"] == claims["auth_time"]


def test_a_password_only_sign_in_is_amr_pwd(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    page = interaction_page(client, authorize_params(world.public_id, challenge))
    consent = client.get(login(client, page.text, "bob").headers["location"])
    body = _tokens(client, world.public_id, verifier, decide(client, consent.text).headers["location"])
    assert _claims(body["access_token"])["amr"] == ["pwd"]


def test_prompt_login_and_max_age_force_a_fresh_sign_in(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert sign_in(client, "bob", next_path="/account").status_code == 303
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    execute(db, "UPDATE login_sessions SET auth_time = :t", t=an_hour_ago)
    verifier, challenge = pkce_pair()
    for extra in ({"prompt": "login"}, {"max_age": "0"}, {"max_age": "60"}):
        page = interaction_page(client, authorize_params(world.public_id, challenge, **extra))
        assert 'name="password"' in page.text, extra
    # A sign-in young enough is used as it is.
    page = interaction_page(client, authorize_params(world.public_id, challenge, max_age="7200"))
    assert 'name="decision"' in page.text and 'name="password"' not in page.text
    silent = client.get("/authorize", params=authorize_params(world.public_id, challenge, prompt="none",
                                                              max_age="0"))
    assert silent.status_code == 303 and query(silent.headers["location"])["error"] == "login_required"
    bad = client.get("/authorize", params=authorize_params(world.public_id, challenge, max_age="soon"))
    assert query(bad.headers["location"])["error"] == "invalid_request"
    # Signing in again under max_age=0 gives the token a new auth_time.
    page = interaction_page(client, authorize_params(world.public_id, challenge, max_age="0"))
    consent = client.get(login(client, page.text, "bob").headers["location"])
    body = _tokens(client, world.public_id, verifier, decide(client, consent.text).headers["location"])
    assert _claims(body["access_token"])["auth_time"] >= int(time.time()) - 5


@pytest.fixture
def admins_app(db_url: str, db: Database) -> Any:
    return create_app(make_settings(db_url, require_second_factor="admins"), db=db)


@pytest.fixture
def web(admins_app: Any) -> Iterator[TestClient]:
    with TestClient(admins_app, base_url=ISSUER, follow_redirects=False) as client:
        yield client


def test_required_for_admins_sends_an_admin_to_set_it_up_before_any_page(web: TestClient, db: Database,
                                                                        clock: Clock) -> None:
    seed(db)
    make_user(db, "root", "admin")
    assert sign_in(web, "root", next_path="/admin").headers["location"] == "/admin"
    for path in ("/admin", "/admin/users", "/account", "/account/activity"):
        sent = web.get(path)
        assert sent.status_code == 303 and sent.headers["location"] == f"/account/two-step?next={path}", path
    page = web.get("/account/two-step?next=/admin")
    assert 'id="second-factor-required"' in page.text
    enrol(web, clock, next_path="/admin")
    assert web.get("/admin").status_code == 200
    with TestClient(web.app, base_url=ISSUER, follow_redirects=False) as person:  # not an admin: not asked
        assert sign_in(person, "alice", next_path="/account").status_code == 303
        assert person.get("/account").status_code == 200


def test_required_for_admins_holds_an_authorization_request_until_set_up(web: TestClient, db: Database,
                                                                        clock: Clock) -> None:
    world = seed(db)
    make_user(db, "root", "admin")
    verifier, challenge = pkce_pair()
    page = interaction_page(web, authorize_params(world.public_id, challenge))
    interaction = login(web, page.text, "root").headers["location"]
    held = web.get(interaction)
    assert held.status_code == 303 and held.headers["location"] == f"/account/two-step?next={interaction}"
    silent = web.get("/authorize", params=authorize_params(world.public_id, challenge, prompt="none"))
    assert query(silent.headers["location"])["error"] == "interaction_required"
    enrol(web, clock, next_path=interaction)
    consent = web.get(interaction)
    assert consent.status_code == 200 and 'name="decision"' in consent.text
    body = _tokens(web, world.public_id, verifier, decide(web, consent.text).headers["location"])
    # Both factors were shown in this session (the password, then the set-up's code).
    assert _claims(body["access_token"])["amr"] == ["pwd", "otp", "mfa"]


def test_required_for_everyone_includes_people_without_a_role(db_url: str, db: Database) -> None:
    app = create_app(make_settings(db_url, require_second_factor="everyone"), db=db)
    seed(db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        sign_in(client, "alice", next_path="/account")
        assert client.get("/account").headers["location"] == "/account/two-step?next=/account"
