"""RFC 8252 §8.6: a public client redirecting to loopback is only a name; remembered consent must not
approve it silently.

The attack: a person once allowed "Desktop Agent" (public, loopback redirect). Any other program on
their computer presents the same client_id with its own port and PKCE pair; with silent
re-authorization it would get a code for the person's access. Now it meets a one-click confirmation
page naming the app and the redirect host, and ``prompt=none`` answers ``consent_required``.
"""

from __future__ import annotations

from starlette.testclient import TestClient

from authserver.db import Database
from tests.conftest import ISSUER
from tests.oauth_helpers import (
    REDIRECT,
    authorize_params,
    count,
    exchange,
    parse_forms,
    pkce_pair,
    query,
    run_flow,
    seed,
)

GENUINE = "http://127.0.0.1:53127/callback"
IMPOSTOR = "http://127.0.0.1:40404/callback"


def _allow_once(client: TestClient, client_id: str, redirect_uri: str, **extra: str) -> None:
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(client_id, challenge, redirect_uri=redirect_uri, **extra))
    code = query(location)["code"]
    assert exchange(client, code, verifier, client_id, redirect_uri=redirect_uri).status_code == 200


def _interaction(client: TestClient, params: dict[str, str]):  # type: ignore[no-untyped-def]
    response = client.get("/authorize", params=params)
    assert response.status_code == 303 and response.headers["location"].startswith("/interaction/")
    return client.get(response.headers["location"])


def test_impostor_with_a_remembered_loopback_client_id_meets_a_confirmation_page(
        client: TestClient, db: Database) -> None:
    world = seed(db)
    _allow_once(client, world.public_id, GENUINE)
    codes_before = count(db, "authorization_codes")

    verifier, challenge = pkce_pair()
    page = _interaction(client, authorize_params(world.public_id, challenge, redirect_uri=IMPOSTOR))
    # No silent code: a page, naming the app and where the code would go (this request's port).
    assert page.status_code == 200
    assert "Desktop Agent" in page.text and "127.0.0.1:40404" in page.text
    assert "wants to continue with the access you granted" in page.text
    assert "/callback" not in page.text.split("<h1>", 1)[1].split("</h1>", 1)[0]  # the host only
    assert count(db, "authorization_codes") == codes_before
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/consent"))
    assert ("decision", "allow") in form.buttons and ("decision", "deny") in form.buttons
    assert not form.checkboxes  # nothing to tick: everything was allowed before

    # A forged POST (no CSRF token) does nothing.
    forged = client.post(form.action, data={"decision": "allow"})
    assert forged.status_code == 403 and count(db, "authorization_codes") == codes_before

    # Only the click issues the code, to this request's redirect URI, with state and iss.
    clicked = client.post(form.action, data={**dict(form.fields), "decision": "allow"})
    assert clicked.status_code == 303
    location = clicked.headers["location"]
    assert location.startswith(IMPOSTOR + "?")
    params = query(location)
    assert params["iss"] == ISSUER and params["state"] == "xyz-state"
    token = exchange(client, params["code"], verifier, world.public_id, redirect_uri=IMPOSTOR)
    assert token.status_code == 200 and token.json()["scope"].split() == ["read:calendar"]
    # The remembered "Stay connected" choice (ticked the first time) is kept.
    assert "refresh_token" in token.json()


def test_cancel_on_the_confirmation_page_is_access_denied_and_keeps_the_consent(
        client: TestClient, db: Database) -> None:
    world = seed(db)
    _allow_once(client, world.public_id, GENUINE)
    page = _interaction(client, authorize_params(world.public_id, pkce_pair()[1], redirect_uri=IMPOSTOR))
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/consent"))
    denied = client.post(form.action, data={**dict(form.fields), "decision": "deny"})
    params = query(denied.headers["location"])
    assert denied.headers["location"].startswith(IMPOSTOR + "?")
    assert params["error"] == "access_denied" and params["iss"] == ISSUER and "code" not in params
    assert count(db, "consents") == 1  # cancelling one request does not disconnect the app


def test_prompt_none_for_a_loopback_public_client_is_consent_required(client: TestClient, db: Database) -> None:
    world = seed(db)
    _allow_once(client, world.public_id, GENUINE)
    codes_before = count(db, "authorization_codes")
    response = client.get("/authorize", params=authorize_params(world.public_id, pkce_pair()[1],
                                                                redirect_uri=IMPOSTOR, prompt="none"))
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(IMPOSTOR + "?")
    params = query(location)
    assert params["error"] == "consent_required" and params["iss"] == ISSUER and params["state"] == "xyz-state"
    assert count(db, "authorization_codes") == codes_before
    assert count(db, "authorization_requests") == 1  # only the first, finished one: nothing left pending


def test_public_client_with_https_redirect_keeps_silent_reauthorization(client: TestClient, db: Database) -> None:
    world = seed(db)  # "Desktop Agent" also registered https://app.example.com/callback
    _allow_once(client, world.public_id, REDIRECT)
    final = _interaction(client, authorize_params(world.public_id, pkce_pair()[1]))
    assert final.status_code == 303 and final.headers["location"].startswith(REDIRECT + "?code=")
    silent = client.get("/authorize", params=authorize_params(world.public_id, pkce_pair()[1], prompt="none"))
    assert "code" in query(silent.headers["location"])


def test_confidential_client_keeps_silent_reauthorization(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.confidential_id, challenge))
    assert exchange(client, query(location)["code"], verifier, world.confidential_id,
                    secret=world.confidential_secret).status_code == 200
    final = _interaction(client, authorize_params(world.confidential_id, pkce_pair()[1]))
    assert final.status_code == 303 and final.headers["location"].startswith(REDIRECT + "?code=")


def test_step_up_for_a_loopback_client_shows_the_full_consent_page(client: TestClient, db: Database) -> None:
    """New scopes get the regular consent page (it already names the app and host), not the confirmation."""
    world = seed(db)
    _allow_once(client, world.public_id, GENUINE)
    page = _interaction(client, authorize_params(world.public_id, pkce_pair()[1], redirect_uri=IMPOSTOR,
                                                 scope="read:calendar write:calendar"))
    assert page.status_code == 200 and 'value="write:calendar"' in page.text
    assert "wants to continue with the access you granted" not in page.text
