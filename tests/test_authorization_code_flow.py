"""The happy path, end to end through the real HTML, and the token it yields."""

from __future__ import annotations

import jwt
from starlette.testclient import TestClient

from authserver.db import Database
from tests.conftest import ISSUER
from tests.oauth_helpers import RESOURCE, authorize_params, exchange, pkce_pair, query, run_flow, seed, user_id


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


def test_no_refresh_token_without_offline_access(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="read:calendar"))
    body = exchange(client, query(location)["code"], verifier, world.public_id).json()
    assert body["access_token"] and "refresh_token" not in body


def test_unticking_stay_connected_means_no_refresh_token(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="read:calendar offline_access"),
                        untick=("offline_access",))
    body = exchange(client, query(location)["code"], verifier, world.public_id).json()
    assert body["scope"] == "read:calendar"
    assert "refresh_token" not in body
