"""The happy path, end to end through the real HTML, and the token it yields."""

from __future__ import annotations

import jwt
from starlette.testclient import TestClient

from authserver.db import Database
from tests.conftest import ISSUER
from tests.oauth_helpers import (
    REDIRECT,
    RESOURCE,
    authorize_params,
    consent_page,
    decide,
    exchange,
    execute,
    pkce_pair,
    query,
    run_flow,
    seed,
    sql,
    stay_connected_box,
    user_id,
)


def test_full_flow_yields_a_token_verifiable_with_jwks(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge,
                                                  scope="read:calendar write:calendar offline_access"))
    params = query(location)
    assert location.startswith("https://app.example.com/callback?")
    assert params["state"] == "xyz-state"
    assert params["iss"] == ISSUER
    response = exchange(client, params["code"], verifier, world.public_id)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read:calendar write:calendar offline_access"
    assert body["refresh_token"]

    jwks = client.get("/jwks.json").json()
    header = jwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(body["access_token"], jwt.PyJWK(key), algorithms=["ES256"], audience=RESOURCE, issuer=ISSUER)
    assert claims["aud"] == RESOURCE
    assert claims["scope"] == "read:calendar write:calendar"
    assert claims["sub"] == user_id(db, "alice")
    assert claims["client_id"] == world.public_id
    assert {"exp", "iat", "jti", "auth_time"} <= claims.keys()
    assert claims["exp"] - claims["iat"] == 600


def test_refresh_token_without_asking_for_offline_access(client: TestClient, db: Database) -> None:
    """Many MCP clients (the TypeScript SDK) never ask for offline_access: "Stay connected" is offered anyway."""
    world = seed(db)
    verifier, challenge = pkce_pair()
    page = consent_page(client, authorize_params(world.public_id, challenge, scope="read:calendar"))
    assert stay_connected_box(page.text) is True  # ticked by default
    location = query(decide(client, page.text).headers["location"])
    body = exchange(client, location["code"], verifier, world.public_id).json()
    assert body["access_token"] and body["refresh_token"]
    assert body["scope"] == "read:calendar"  # offline_access was not asked for, so it is not granted as a scope


def test_declined_stay_connected_is_honoured_on_silent_reauthorization(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="read:calendar"),
                        untick=("offline_access",))
    assert "refresh_token" not in exchange(client, query(location)["code"], verifier, world.public_id).json()
    assert sql(db, "SELECT stay_connected FROM consents") == [(False,)]
    # Signed in and consented: the next authorization is answered without a page, and still
    # without a refresh token, even when the client now asks for offline_access.
    verifier, challenge = pkce_pair()
    response = client.get("/authorize", params=authorize_params(world.public_id, challenge,
                                                                 scope="read:calendar offline_access"))
    location = response.headers["location"]
    if location.startswith("/interaction/"):
        location = client.get(location).headers["location"]
    assert location.startswith(REDIRECT), location
    body = exchange(client, query(location)["code"], verifier, world.public_id).json()
    assert body["scope"] == "read:calendar" and "refresh_token" not in body


def test_stay_connected_is_not_offered_to_a_client_without_the_refresh_grant(client: TestClient, db: Database) -> None:
    world = seed(db)
    execute(db, "UPDATE clients SET grant_types = :g WHERE client_id = :c", g='["authorization_code"]',
            c=world.public_id)
    verifier, challenge = pkce_pair()
    page = consent_page(client, authorize_params(world.public_id, challenge, scope="read:calendar offline_access"))
    assert stay_connected_box(page.text) is None
    location = query(decide(client, page.text).headers["location"])
    body = exchange(client, location["code"], verifier, world.public_id).json()
    assert "refresh_token" not in body and body["scope"] == "read:calendar"


def test_offline_access_alone_never_skips_the_first_consent(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = consent_page(client, authorize_params(world.public_id, pkce_pair()[1], scope="offline_access"))
    assert 'name="decision"' in page.text


def test_unticking_stay_connected_means_no_refresh_token(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="read:calendar offline_access"),
                        untick=("offline_access",))
    body = exchange(client, query(location)["code"], verifier, world.public_id).json()
    assert body["scope"] == "read:calendar"
    assert "refresh_token" not in body
