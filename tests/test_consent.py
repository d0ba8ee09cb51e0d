"""Sign-in, consent and remembered consent, prompt handling, cookies and page safety (issue 3).

Everything goes through the real HTML: forms are parsed and posted as a browser would.
Failures are checked on both sides: the response, and that nothing was stored (no code,
no consent, the request still where it was).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.interaction import consents
from authserver.interaction.models import AuthorizationRequest
from authserver.tokens.purge import purge
from authserver.users import repository as users
from tests.conftest import ISSUER, make_settings
from tests.oauth_helpers import (
    LOOPBACK_REDIRECT,
    OTHER_RESOURCE,
    PASSWORD,
    REDIRECT,
    RESOURCE,
    World,
    authorize_params,
    consent_form,
    consent_page,
    count,
    decide,
    exchange,
    execute,
    interaction_page,
    login,
    parse_forms,
    pkce_pair,
    query,
    run_flow,
    scope_checkboxes,
    seed,
    sql,
    user_id,
)

BOTH = "read:calendar write:calendar"

# --- helpers -------------------------------------------------------------------------------


def params_for(world: World, scope: str = "read:calendar", **extra: str) -> dict[str, str]:
    return authorize_params(world.public_id, pkce_pair()[1], scope=scope, **extra)


def grant(client: TestClient, world: World, scope: str, *, client_id: str | None = None,
          **extra: str) -> tuple[dict[str, str], str]:
    """Run a whole flow (allowing everything shown); the callback's query and the verifier."""
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(client_id or world.public_id, challenge, scope=scope, **extra))
    return query(location), verifier


def token_scope(client: TestClient, world: World, code: str, verifier: str) -> list[str]:
    response = exchange(client, code, verifier, world.public_id)
    assert response.status_code == 200, response.text
    return response.json()["scope"].split()


def remembered(db: Database, client_id: str, resource: str = RESOURCE) -> list[str] | None:
    with db.session() as s:
        user = users.get_by_username(s, "alice")
        assert user is not None
        rows = [c for c in consents.for_user(s, user.id) if c.client_id == client_id and c.resource == resource]
        return list(rows[0].scopes) if rows else None


def statuses(db: Database) -> list[str]:
    return [row[0] for row in sql(db, "SELECT status FROM authorization_requests")]


def audit(db: Database, event: str) -> list[tuple]:  # type: ignore[type-arg]
    return sql(db, "SELECT actor, client_id FROM audit_events WHERE event = :event", event=event)


def assert_error_page(response, status: int) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers


def assert_rejected_consent(response, db: Database) -> None:  # type: ignore[no-untyped-def]
    """403 page; no code, no consent; the request is still waiting for its rightful decision."""
    assert_error_page(response, 403)
    assert count(db, "authorization_codes") == 0
    assert count(db, "consents") == 0
    assert statuses(db) == ["authenticated"]


def fresh_client(app) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app, base_url=ISSUER, follow_redirects=False)


def set_cookie_headers(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


# --- CSRF and browser binding --------------------------------------------------------------


def test_consent_post_without_csrf_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world))
    form = consent_form(page.text)
    response = client.post(form.action, data={"scope": ["read:calendar"], "decision": "allow"})
    assert_rejected_consent(response, db)


def test_consent_post_with_wrong_csrf_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world))
    form = consent_form(page.text)
    token = form.value("csrf")
    assert token
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = client.post(form.action, data={"csrf": forged, "scope": ["read:calendar"], "decision": "allow"})
    assert_rejected_consent(response, db)


def test_consent_post_with_login_csrf_is_rejected(client: TestClient, db: Database) -> None:
    """A CSRF token is bound to its purpose: the sign-in form's token does not approve consent."""
    world = seed(db)
    page = interaction_page(client, params_for(world))
    login_csrf = parse_forms(page.text)[0].value("csrf")
    response = login(client, page.text)
    consent = client.get(response.headers["location"])
    form = consent_form(consent.text)
    response = client.post(form.action, data={"csrf": login_csrf, "scope": ["read:calendar"], "decision": "allow"})
    assert_rejected_consent(response, db)


def test_consent_post_with_csrf_of_another_request_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    first = consent_page(client, params_for(world))
    second = consent_page(client, params_for(world))
    first_form, second_form = consent_form(first.text), consent_form(second.text)
    assert first_form.action != second_form.action
    response = client.post(second_form.action, data={"csrf": first_form.value("csrf"), "scope": ["read:calendar"],
                                                     "decision": "allow"})
    assert_error_page(response, 403)
    assert count(db, "authorization_codes") == 0
    assert count(db, "consents") == 0


def test_consent_post_without_browser_cookie_is_rejected(client: TestClient, db: Database, app) -> None:  # type: ignore[no-untyped-def]
    world = seed(db)
    page = consent_page(client, params_for(world))
    form = consent_form(page.text)
    data = {**dict(form.fields), "scope": ["read:calendar"], "decision": "allow"}
    other = fresh_client(app)
    # Even with the victim's session cookie, but without the binding cookie of the browser that started it.
    session_cookie = client.cookies.get("authserver_session")
    assert session_cookie
    other.cookies.set("authserver_session", session_cookie)
    assert_rejected_consent(other.post(form.action, data=data), db)


def test_consent_post_with_cleared_cookies_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world))
    form = consent_form(page.text)
    client.cookies.clear()
    response = client.post(form.action, data={**dict(form.fields), "scope": ["read:calendar"], "decision": "allow"})
    assert_rejected_consent(response, db)


def test_consent_post_from_attackers_own_browser_is_rejected(client: TestClient, db: Database, app) -> None:  # type: ignore[no-untyped-def]
    """An attacker with a binding cookie and a session of their own cannot finish the victim's request."""
    world = seed(db)
    page = consent_page(client, params_for(world))
    form = consent_form(page.text)
    attacker = fresh_client(app)
    consent_page(attacker, params_for(world), username="bob")  # the attacker's own browser state
    codes_before = count(db, "authorization_codes")
    response = attacker.post(form.action, data={**dict(form.fields), "scope": ["read:calendar"],
                                                "decision": "allow"})
    assert_error_page(response, 403)
    assert count(db, "authorization_codes") == codes_before == 0
    assert count(db, "consents") == 0


def test_consent_after_signing_in_as_someone_else_is_rejected(client: TestClient, db: Database) -> None:
    """Alice's open consent page cannot be approved once the browser is signed in as Bob."""
    world = seed(db)
    page = consent_page(client, params_for(world))
    # In another tab, the same browser signs in as bob (prompt=login forces the sign-in page).
    other = interaction_page(client, params_for(world, prompt="login"))
    assert login(client, other.text, "bob").status_code == 303
    response = decide(client, page.text)
    assert_error_page(response, 403)
    assert count(db, "authorization_codes") == 0
    assert count(db, "consents") == 0


def test_login_post_without_csrf_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = interaction_page(client, params_for(world))
    form = parse_forms(page.text)[0]
    response = client.post(form.action, data={"username": "alice", "password": PASSWORD})
    assert_error_page(response, 403)
    assert count(db, "login_sessions") == 0
    assert "set-cookie" not in response.headers
    assert statuses(db) == ["created"]


def test_interaction_page_from_another_browser_is_rejected(client: TestClient, db: Database, app) -> None:  # type: ignore[no-untyped-def]
    world = seed(db)
    response = client.get("/authorize", params=params_for(world))
    location = response.headers["location"]
    assert_error_page(fresh_client(app).get(location), 403)
    assert statuses(db) == ["created"]


# --- deny, partial approval and remembered consent -----------------------------------------


def test_deny_redirects_access_denied_with_state_and_iss(client: TestClient, db: Database) -> None:
    world = seed(db)
    location = run_flow(client, params_for(world), decision="deny")
    assert location.startswith(REDIRECT + "?")
    params = query(location)
    assert params["error"] == "access_denied"
    assert params["state"] == "xyz-state"
    assert params["iss"] == ISSUER
    assert "code" not in params
    assert count(db, "authorization_codes") == 0
    assert count(db, "consents") == 0
    assert statuses(db) == ["done"]
    assert audit(db, "consent.denied") == [(user_id(db, "alice"), world.public_id)]


def test_allow_with_every_scope_unticked_is_a_denial(client: TestClient, db: Database) -> None:
    world = seed(db)
    location = run_flow(client, params_for(world, scope=BOTH), untick=("read:calendar", "write:calendar"))
    assert query(location)["error"] == "access_denied"
    assert count(db, "authorization_codes") == 0
    assert count(db, "consents") == 0


def test_unticked_scope_is_not_granted(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope=BOTH), untick=("write:calendar",))
    params = query(location)
    assert token_scope(client, world, params["code"], verifier) == ["read:calendar"]
    assert remembered(db, world.public_id) == ["read:calendar"]
    assert sql(db, "SELECT scopes FROM authorization_codes")[0][0] in (["read:calendar"], '["read:calendar"]')


def test_consent_post_cannot_add_scopes_that_were_not_requested(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    page = consent_page(client, authorize_params(world.public_id, challenge, scope="read:calendar"))
    form = consent_form(page.text)
    data = {**dict(form.fields), "decision": "allow",
            "scope": ["read:calendar", "write:calendar", "read:email", "offline_access"]}
    response = client.post(form.action, data=data)
    assert response.status_code == 303
    code = query(response.headers["location"])["code"]
    assert token_scope(client, world, code, verifier) == ["read:calendar"]
    assert remembered(db, world.public_id) == ["read:calendar"]


def test_remembered_consent_skips_the_page_for_the_same_scopes(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, BOTH)
    verifier, challenge = pkce_pair()
    response = client.get("/authorize", params=authorize_params(world.public_id, challenge, scope=BOTH))
    assert response.headers["location"].startswith("/interaction/")
    final = client.get(response.headers["location"])
    assert final.status_code == 303  # no page: straight back to the client
    location = final.headers["location"]
    assert location.startswith(REDIRECT + "?")
    params = query(location)
    assert params["state"] == "xyz-state" and params["iss"] == ISSUER
    assert token_scope(client, world, params["code"], verifier) == BOTH.split()
    # A subset of what was allowed is also answered without asking.
    subset = client.get("/authorize", params=params_for(world, scope="read:calendar"))
    assert client.get(subset.headers["location"]).status_code == 303


def test_remembered_consent_is_per_client(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    # Same person, same resource, same scope: another client must still ask.
    page = interaction_page(client, authorize_params(world.confidential_id, pkce_pair()[1]))
    assert page.status_code == 200
    assert scope_checkboxes(page.text) == [("read:calendar", True)]


def test_remembered_consent_is_per_resource(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar", client_id=world.confidential_id)
    page = interaction_page(client, authorize_params(world.confidential_id, pkce_pair()[1],
                                                     resource=OTHER_RESOURCE, scope="read:email"))
    assert page.status_code == 200
    assert scope_checkboxes(page.text) == [("read:email", True)]


def test_new_scope_shows_only_the_new_scope_and_token_gets_the_union(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    verifier, challenge = pkce_pair()
    page = interaction_page(client, authorize_params(world.public_id, challenge, scope=BOTH))
    assert page.status_code == 200
    assert scope_checkboxes(page.text) == [("write:calendar", True)]
    assert "Already allowed before" in page.text
    already = page.text.split("Already allowed before", 1)[1]
    assert "read:calendar" in already and "write:calendar" not in already
    response = decide(client, page.text)
    code = query(response.headers["location"])["code"]
    assert token_scope(client, world, code, verifier) == BOTH.split()
    assert sorted(remembered(db, world.public_id) or []) == sorted(BOTH.split())


def test_declined_scope_is_asked_again_next_time(client: TestClient, db: Database) -> None:
    world = seed(db)
    run_flow(client, params_for(world, scope=BOTH), untick=("write:calendar",))
    page = interaction_page(client, params_for(world, scope=BOTH))
    assert page.status_code == 200
    assert scope_checkboxes(page.text) == [("write:calendar", True)]


def test_prompt_consent_always_shows_the_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    page = interaction_page(client, params_for(world, prompt="consent"))
    assert page.status_code == 200
    # Shown, but what was allowed before is listed apart, not asked again.
    assert scope_checkboxes(page.text) == []
    assert "Already allowed before" in page.text
    codes_before = count(db, "authorization_codes")
    assert codes_before == 1
    response = decide(client, page.text)
    assert "code" in query(response.headers["location"])
    assert count(db, "authorization_codes") == 2


# --- prompt=none and prompt=login ----------------------------------------------------------


def test_prompt_none_without_session_is_login_required(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = client.get("/authorize", params=params_for(world, prompt="none"))
    assert response.status_code == 303
    params = query(response.headers["location"])
    assert response.headers["location"].startswith(REDIRECT + "?")
    assert params["error"] == "login_required"
    assert params["state"] == "xyz-state" and params["iss"] == ISSUER
    assert count(db, "authorization_requests") == 0
    assert count(db, "authorization_codes") == 0


def test_prompt_none_without_consent_is_consent_required(client: TestClient, db: Database) -> None:
    world = seed(db)
    consent_page(client, params_for(world))  # signs in, never decides
    response = client.get("/authorize", params=params_for(world, prompt="none"))
    params = query(response.headers["location"])
    assert params["error"] == "consent_required"
    assert params["state"] == "xyz-state" and params["iss"] == ISSUER
    assert count(db, "authorization_codes") == 0
    assert statuses(db) == ["authenticated"]  # only the abandoned interactive one


def test_prompt_none_with_partial_consent_is_consent_required(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    response = client.get("/authorize", params=params_for(world, scope=BOTH, prompt="none"))
    assert query(response.headers["location"])["error"] == "consent_required"
    assert count(db, "authorization_codes") == 1


def test_prompt_none_with_consent_returns_a_code(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, BOTH)
    verifier, challenge = pkce_pair()
    response = client.get("/authorize", params=authorize_params(world.public_id, challenge, scope=BOTH,
                                                                prompt="none"))
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    params = query(location)
    assert params["state"] == "xyz-state" and params["iss"] == ISSUER
    assert token_scope(client, world, params["code"], verifier) == BOTH.split()


def test_prompt_none_for_disabled_user_is_login_required(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    with db.session() as s:
        users.set_disabled(s, "alice")
    response = client.get("/authorize", params=params_for(world, prompt="none"))
    assert query(response.headers["location"])["error"] == "login_required"
    assert count(db, "authorization_codes") == 1


def test_prompt_login_forces_the_login_page_when_signed_in(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    assert client.cookies.get("authserver_session")
    page = interaction_page(client, params_for(world, prompt="login"))
    assert page.status_code == 200
    assert 'name="password"' in page.text
    assert count(db, "authorization_codes") == 1
    # Signing in again completes it (consent is remembered, so straight to a code).
    response = login(client, page.text)
    final = client.get(response.headers["location"])
    assert final.status_code == 303
    assert "code" in query(final.headers["location"])
    assert count(db, "login_sessions") == 2


def test_signed_in_user_skips_the_login_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    page = interaction_page(client, params_for(world, scope=BOTH))
    assert 'name="password"' not in page.text
    assert 'name="decision"' in page.text


# --- request lifetime and replay -----------------------------------------------------------


def test_expired_authorization_request_shows_error_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = client.get("/authorize", params=params_for(world))
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert execute(db, "UPDATE authorization_requests SET expires_at = :past", past=past) == 1
    page = client.get(response.headers["location"])
    assert_error_page(page, 400)
    assert "expired" in page.text
    assert 'name="password"' not in page.text


def test_expired_authorization_request_cannot_be_consented(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world))
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert execute(db, "UPDATE authorization_requests SET expires_at = :past", past=past) == 1
    response = decide(client, page.text)
    assert_error_page(response, 400)
    assert count(db, "authorization_codes") == 0
    assert count(db, "consents") == 0


def test_expired_authorization_request_cannot_be_signed_into(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = interaction_page(client, params_for(world))
    past = datetime.now(UTC) - timedelta(seconds=1)
    execute(db, "UPDATE authorization_requests SET expires_at = :past", past=past)
    response = login(client, page.text)
    assert_error_page(response, 400)
    assert count(db, "login_sessions") == 0


def test_authorization_request_lives_ten_minutes(client: TestClient, db: Database) -> None:
    world = seed(db)
    client.get("/authorize", params=params_for(world))
    with db.session() as s:
        row = s.query(AuthorizationRequest).one()
        assert (row.expires_at - row.created_at).total_seconds() == 600


def test_replayed_consent_post_shows_error_page_and_issues_one_code(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world))
    first = decide(client, page.text)
    assert first.status_code == 303 and "code" in query(first.headers["location"])
    again = decide(client, page.text)
    assert_error_page(again, 400)
    deny = decide(client, page.text, "deny")
    assert_error_page(deny, 400)
    assert count(db, "authorization_codes") == 1
    assert len(audit(db, "code.issued")) == 1


def test_completed_request_page_cannot_be_revisited(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = client.get("/authorize", params=params_for(world))
    interaction = response.headers["location"]
    page = client.get(interaction)
    login(client, page.text)
    decide(client, client.get(interaction).text)
    assert count(db, "authorization_codes") == 1
    revisit = client.get(interaction)
    assert_error_page(revisit, 400)
    assert count(db, "authorization_codes") == 1


def test_made_up_interaction_id_says_unknown_request_not_expired(client: TestClient, db: Database) -> None:
    world = seed(db)
    interaction_page(client, params_for(world))  # a real request exists meanwhile; it changes nothing
    for rid in ("not-a-real-request", "x" * 500, "", "%00"):
        page = client.get(f"/interaction/{rid}")
        if rid == "":
            assert page.status_code == 404  # no route at all
            continue
        assert_error_page(page, 404)
        assert "Unknown request" in page.text and "expired" not in page.text
        assert "Desktop Agent" not in page.text and "alice" not in page.text
    # Its forms too: nothing is signed into or decided for an unknown request.
    for action in ("login", "consent"):
        response = client.post(f"/interaction/made-up/{action}", data={"csrf": "x", "username": "alice",
                                                                       "password": PASSWORD})
        assert_error_page(response, 404)
        assert "Unknown request" in response.text
    assert count(db, "login_sessions") == 0 and count(db, "authorization_codes") == 0


def test_expired_or_used_request_says_expired_while_kept_and_unknown_once_purged(
        client: TestClient, db: Database) -> None:
    """Known while its row is kept (whatever the browser), unknown once the purge has deleted it."""
    world = seed(db)
    used = client.get("/authorize", params=params_for(world)).headers["location"]
    login(client, client.get(used).text)
    assert decide(client, client.get(used).text).status_code == 303
    answered = client.get(used)
    assert_error_page(answered, 400)
    assert "This request has expired" in answered.text
    stale = client.get("/authorize", params=params_for(world)).headers["location"]
    execute(db, "UPDATE authorization_requests SET expires_at = :past WHERE status <> 'done'",
            past=datetime.now(UTC) - timedelta(seconds=1))
    other_browser = TestClient(client.app, base_url=ISSUER, follow_redirects=False)
    for browser in (client, other_browser):
        expired = browser.get(stale)
        assert_error_page(expired, 400)
        assert "This request has expired" in expired.text
    with client.app.state.services.db.session() as s:
        purge(s, datetime.now(UTC) + timedelta(seconds=601), 0)
    for location in (stale, used):
        gone = client.get(location)
        assert_error_page(gone, 404)
        assert "Unknown request" in gone.text


def test_unknown_request_page_in_korean(client: TestClient, db: Database) -> None:
    seed(db)
    client.cookies.set("authserver_lang", "ko")
    page = client.get("/interaction/made-up")
    assert_error_page(page, 404)
    assert "알 수 없는 요청" in page.text and "만료" not in page.text


# --- sign-in -------------------------------------------------------------------------------


def test_wrong_password_shows_login_page_with_error_and_audits(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = interaction_page(client, params_for(world))
    response = login(client, page.text, password="wrong password")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in response.text and "do not match" in response.text
    assert 'value="alice"' in response.text  # the username is kept, the password is not
    assert "wrong password" not in response.text
    assert "set-cookie" not in response.headers
    assert count(db, "login_sessions") == 0
    assert statuses(db) == ["created"]
    assert audit(db, "login.failed") == [(user_id(db, "alice"), world.public_id)]
    # The page it returns still works.
    retry = login(client, response.text)
    assert retry.status_code == 303
    assert statuses(db) == ["authenticated"]


def test_failed_login_page_escapes_the_username(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = interaction_page(client, params_for(world))
    evil = '"><script>alert(1)</script>'
    response = login(client, page.text, username=evil)
    assert response.status_code == 401
    assert evil not in response.text
    assert "<script" not in response.text
    assert "&#34;&gt;&lt;script&gt;" in response.text or "&quot;&gt;&lt;script&gt;" in response.text


def test_unknown_username_fails_like_a_wrong_password(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = interaction_page(client, params_for(world))
    response = login(client, page.text, username="mallory")
    assert response.status_code == 401
    assert "do not match" in response.text
    # Audited, but what was typed is not kept for a name with no account (often a mistyped password).
    assert audit(db, "login.failed") == [(None, world.public_id)]
    assert count(db, "login_sessions") == 0


def test_disabled_user_cannot_sign_in(client: TestClient, db: Database) -> None:
    world = seed(db)
    with db.session() as s:
        users.set_disabled(s, "alice")
    page = interaction_page(client, params_for(world))
    response = login(client, page.text)
    assert response.status_code == 401
    assert "do not match" in response.text
    assert count(db, "login_sessions") == 0
    assert statuses(db) == ["created"]
    assert audit(db, "login.failed") == [(user_id(db, "alice"), world.public_id)]


def test_disabled_users_existing_session_no_longer_works(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    open_page = consent_page(client, params_for(world, scope=BOTH))  # signed in, consent page open
    with db.session() as s:
        users.set_disabled(s, "alice")
    # The open consent page can no longer be approved ...
    response = decide(client, open_page.text)
    assert_error_page(response, 403)
    assert count(db, "authorization_codes") == 1
    # ... and a new request (even one with remembered consent) asks to sign in again.
    page = interaction_page(client, params_for(world, scope="read:calendar"))
    assert page.status_code == 200
    assert 'name="password"' in page.text
    assert count(db, "authorization_codes") == 1


def test_login_session_cookie_flags(client: TestClient, db: Database) -> None:
    world = seed(db)
    first = client.get("/authorize", params=params_for(world))
    browser = set_cookie_headers(first)["authserver_browser"].lower()
    page = client.get(first.headers["location"])
    response = login(client, page.text)
    assert response.status_code == 303
    session = set_cookie_headers(response)["authserver_session"].lower()
    for header in (session, browser):
        attributes = [a.strip() for a in header.split(";")]
        assert "httponly" in attributes
        assert "samesite=lax" in attributes
        assert "path=/" in attributes
        assert "secure" not in attributes  # the issuer is plain http on loopback
        assert not any(a.startswith("domain=") for a in attributes)
    value = client.cookies.get("authserver_session")
    assert value and len(value) >= 40
    # Only the hash of the cookie value is stored.
    assert sql(db, "SELECT COUNT(*) FROM login_sessions WHERE id_hash = :v", v=value)[0][0] == 0
    assert count(db, "login_sessions") == 1


def test_login_does_not_adopt_a_planted_session_cookie(client: TestClient, db: Database) -> None:
    """Session fixation: a value set before sign-in is replaced, and never becomes a session."""
    world = seed(db)
    planted = "p" * 43
    client.cookies.set("authserver_session", planted)
    page = interaction_page(client, params_for(world))
    response = login(client, page.text)
    assert response.status_code == 303
    issued = set_cookie_headers(response)["authserver_session"]
    assert planted not in issued
    attacker = TestClient(client.app, base_url=ISSUER, follow_redirects=False)
    attacker.cookies.set("authserver_session", planted)
    attacker_page = interaction_page(attacker, params_for(world))
    assert 'name="password"' in attacker_page.text  # the planted value signs nobody in


def test_expired_login_session_asks_to_sign_in_again(client: TestClient, db: Database) -> None:
    world = seed(db)
    grant(client, world, "read:calendar")
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert execute(db, "UPDATE login_sessions SET expires_at = :past", past=past) == 1
    page = interaction_page(client, params_for(world))
    assert 'name="password"' in page.text
    response = client.get("/authorize", params=params_for(world, prompt="none"))
    assert query(response.headers["location"])["error"] == "login_required"
    assert count(db, "authorization_codes") == 1


def test_sign_out_from_the_consent_page_ends_the_session(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world))
    logout_form = next(f for f in parse_forms(page.text) if f.action == "/logout")
    # Without the CSRF field nothing happens.
    assert_error_page(client.post("/logout", data={}), 403)
    assert count(db, "login_sessions") == 1
    response = client.post("/logout", data=dict(logout_form.fields))
    assert response.status_code == 200
    assert count(db, "login_sessions") == 0
    assert set_cookie_headers(response)["authserver_session"].lower().count("max-age=0") == 1
    # The consent page left open cannot be approved any more.
    assert_error_page(decide(client, page.text), 403)
    assert count(db, "authorization_codes") == 0


def test_cookies_are_secure_and_host_prefixed_on_https_issuer(db_url: str, db: Database) -> None:
    settings = make_settings(db_url, issuer="https://auth.example.com")
    app = create_app(settings, db=db)
    world = seed(db)
    with TestClient(app, base_url="https://auth.example.com", follow_redirects=False) as https_client:
        first = https_client.get("/authorize", params=params_for(world))
        assert set_cookie_headers(first).keys() == {"__Host-authserver_browser"}
        page = https_client.get(first.headers["location"])
        response = login(https_client, page.text)
        assert response.status_code == 303
        header = set_cookie_headers(response)["__Host-authserver_session"].lower()
        attributes = [a.strip() for a in header.split(";")]
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(attributes)
        assert response.headers["strict-transport-security"].startswith("max-age=")


# --- what the consent page says ------------------------------------------------------------


def test_consent_page_names_client_resource_scopes_and_redirect_host(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world, scope=BOTH))
    text = page.text
    assert "Desktop Agent" in text
    assert "Calendar" in text
    assert "See your calendar events" in text
    assert "Create, change and delete your calendar events" in text
    assert "<code>app.example.com</code>" in text
    assert "You are signed in as <strong>alice</strong>" in text
    assert "runs on your own computer" not in text  # no loopback warning for an https redirect
    assert page.headers["cache-control"] == "no-store"


def test_consent_page_lists_write_scopes_first_and_marks_them(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world, scope=BOTH))  # read requested first
    assert scope_checkboxes(page.text) == [("write:calendar", True), ("read:calendar", True)]
    items = re.findall(r'<li class="(write|read)">(.*?)</li>', page.text, re.S)
    assert [kind for kind, _ in items] == ["write", "read"]
    assert "can make changes" in items[0][1]
    assert "can make changes" not in items[1][1]


def test_consent_page_warns_for_loopback_redirect(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, params_for(world, redirect_uri="http://127.0.0.1:53124/callback"))
    assert "runs on your own computer" in page.text
    assert "<code>127.0.0.1:53124</code>" in page.text
    assert LOOPBACK_REDIRECT.startswith("http://127.0.0.1")


def test_consent_page_warns_for_unverified_client(client: TestClient, db: Database) -> None:
    seed(db)
    with db.session() as s:
        unverified = clients.create_client(s, clients.NewClient(
            name="Self Registered", redirect_uris=[REDIRECT], public=True, scopes=["read:calendar"],
            resources=[RESOURCE], verified=False, kind="dynamic")).client.client_id
    page = consent_page(client, authorize_params(unverified, pkce_pair()[1]))
    assert "Unverified application" in page.text


def test_consent_page_escapes_client_name(client: TestClient, db: Database) -> None:
    seed(db)
    name = '<script>alert(1)</script><img src=x onerror=alert(2)>'
    with db.session() as s:
        evil = clients.create_client(s, clients.NewClient(
            name=name, redirect_uris=[REDIRECT], public=True, scopes=["read:calendar"],
            resources=[RESOURCE], verified=False, kind="dynamic")).client.client_id
    page = consent_page(client, authorize_params(evil, pkce_pair()[1]))
    assert name not in page.text
    assert "<script" not in page.text and "<img" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


# --- headers on every HTML page ------------------------------------------------------------


@pytest.mark.parametrize("page_kind", ["login", "consent", "error", "login_failed"])
def test_html_pages_carry_csp_frame_ancestors_none_and_no_inline_script(
        client: TestClient, db: Database, page_kind: str) -> None:
    world = seed(db)
    if page_kind == "error":
        page = client.get("/authorize", params=authorize_params("no-such-client", pkce_pair()[1]))
    elif page_kind == "login":
        page = interaction_page(client, params_for(world))
    elif page_kind == "login_failed":
        page = login(client, interaction_page(client, params_for(world)).text, password="nope nope nope")
    else:
        page = consent_page(client, params_for(world))
    assert page.headers["content-type"].startswith("text/html")
    csp = [d.strip() for d in page.headers["content-security-policy"].split(";")]
    assert "frame-ancestors 'none'" in csp
    assert any(d.startswith("default-src 'none'") for d in csp)
    assert not any("unsafe-inline" in d for d in csp)
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"  # the interaction id never leaks
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text.lower()
    assert not re.search(r"\son[a-z]+\s*=", page.text)  # no inline event handlers


# --- races: double clicks and two tabs -----------------------------------------------------


def _post_concurrently(client: TestClient, posts: list[tuple[str, dict]]) -> list[object]:  # type: ignore[type-arg]
    """POST each (url, data) from its own thread, all released at once; status codes or exceptions."""
    barrier = threading.Barrier(len(posts))
    results: list[object] = [None] * len(posts)

    def post(i: int, url: str, data: dict) -> None:  # type: ignore[type-arg]
        barrier.wait()
        try:
            response = client.post(url, data=data)
            results[i] = (response.status_code, response.headers.get("location"))
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=post, args=(i, url, data)) for i, (url, data) in enumerate(posts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_racing_consent_posts_issue_exactly_one_code(client: TestClient, db: Database) -> None:
    """A double (quadruple) click: one code, and every other click gets the error page, never a 500."""
    world = seed(db)
    for round_ in range(4):
        scope = BOTH if round_ % 2 else "read:calendar"
        page = consent_page(client, params_for(world, scope=scope, prompt="consent"))
        form = consent_form(page.text)
        data = {**dict(form.fields), "scope": scope.split(), "decision": "allow"}
        results = _post_concurrently(client, [(form.action, data)] * 4)
        assert not [r for r in results if isinstance(r, Exception)], results
        codes = [r for r in results if r[0] == 303 and "code=" in (r[1] or "")]  # type: ignore[index]
        assert len(codes) == 1, results
        assert sorted(r[0] for r in results) == [303, 400, 400, 400], results  # type: ignore[index]
        assert count(db, "authorization_codes") == round_ + 1
    assert sorted(remembered(db, world.public_id) or []) == sorted(BOTH.split())


def test_racing_first_consents_from_two_tabs_both_succeed(client: TestClient, db: Database) -> None:
    """Two requests of one client approved at once: both get a code, and both approvals are remembered."""
    world = seed(db)
    for round_, (first_scope, second_scope) in enumerate([("read:calendar", BOTH), (BOTH, "read:calendar")]):
        if round_:
            execute(db, "DELETE FROM consents")
        pages = [consent_page(client, params_for(world, scope=first_scope)),
                 consent_page(client, params_for(world, scope=second_scope))]
        posts = []
        for page, scope in zip(pages, (first_scope, second_scope), strict=True):
            form = consent_form(page.text)
            posts.append((form.action, {**dict(form.fields), "scope": scope.split(), "decision": "allow"}))
        results = _post_concurrently(client, posts)
        assert not [r for r in results if isinstance(r, Exception)], results
        assert [r[0] for r in results] == [303, 303], results  # type: ignore[index]
        assert all("code=" in r[1] for r in results), results  # type: ignore[index]
        assert sorted(remembered(db, world.public_id) or []) == sorted(BOTH.split())
