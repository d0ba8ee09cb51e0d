"""RFC 7591 registration and RFC 7592 management: policy, validation, and what a registered client may do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.clients.models import Client
from authserver.db import Database, utcnow
from authserver.tokens.models import RefreshToken
from authserver.tokens.purge import purge
from tests.conftest import ISSUER, make_settings
from tests.oauth_helpers import RESOURCE, authorize_params, count, exchange, pkce_pair, query, run_flow, seed

LOOPBACK = "http://127.0.0.1:33418/callback"


def register(client: TestClient, **metadata: object):  # type: ignore[no-untyped-def]
    body = {"redirect_uris": [LOOPBACK], "token_endpoint_auth_method": "none", "client_name": "Claude Desktop",
            "grant_types": ["authorization_code", "refresh_token"], "scope": "read:calendar"}
    body.update(metadata)
    return client.post("/register", json={k: v for k, v in body.items() if v is not None})


def test_registration_returns_credentials_once_and_stores_hashes(client: TestClient, db: Database) -> None:
    response = register(client, token_endpoint_auth_method="client_secret_basic",
                        redirect_uris=["https://agent.example.com/cb"])
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["client_secret"] and body["registration_access_token"]
    assert body["client_secret_expires_at"] == 0
    assert body["registration_client_uri"] == f"{ISSUER}/register/{body['client_id']}"
    with db.session() as s:
        row = s.get(Client, body["client_id"])
        assert row is not None and row.kind == "dynamic" and not row.verified
        assert body["client_secret"] not in (row.secret_hash, row.registration_token_hash)
        assert row.expires_at is not None


def test_public_loopback_client_becomes_native(client: TestClient) -> None:
    body = register(client).json()
    assert body["application_type"] == "native"
    assert "client_secret" not in body


@pytest.mark.parametrize("uris", [
    ["http://evil.example.com/cb"], ["javascript:alert(1)"], ["data:text/html,hi"], ["https://a.example.com/cb#frag"],
    ["not a url"], [], ["https://a.example.com:99999/cb"],
])
def test_bad_redirect_uris_are_refused(client: TestClient, db: Database, uris: list[str]) -> None:
    response = register(client, redirect_uris=uris)
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")
    assert count(db, "clients") == 0


def test_web_application_cannot_use_loopback(client: TestClient) -> None:
    response = register(client, application_type="web")
    assert response.json()["error"] == "invalid_redirect_uri"


@pytest.mark.parametrize("metadata", [
    {"grant_types": ["client_credentials"]}, {"grant_types": ["implicit"]}, {"response_types": ["token"]},
    {"token_endpoint_auth_method": "private_key_jwt"}, {"client_name": 42}, {"redirect_uris": "https://a/cb"},
    {"client_name": "x" * 201}, {"logo_uri": "http://insecure.example.com/logo.png"},
])
def test_malformed_metadata_is_refused(client: TestClient, db: Database, metadata: dict) -> None:
    response = register(client, **metadata)
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
    assert count(db, "clients") == 0


def test_malformed_and_oversized_json(client: TestClient, db: Database) -> None:
    headers = {"content-type": "application/json"}
    assert client.post("/register", content=b"{not json", headers=headers).json()["error"] == "invalid_client_metadata"
    assert client.post("/register", content=b"[1, 2]", headers=headers).json()["error"] == "invalid_client_metadata"
    form = client.post("/register", data={"redirect_uris": LOOPBACK})
    assert form.json()["error"] == "invalid_client_metadata"
    big = client.post("/register", content=b'{"client_name": "' + b"x" * 70_000 + b'"}', headers=headers)
    assert big.status_code == 413
    assert count(db, "clients") == 0


def test_unknown_fields_are_ignored_not_stored(client: TestClient, db: Database) -> None:
    body = register(client, is_admin=True, scopes_allowed=["*"], software_statement="eyJ...").json()
    assert "is_admin" not in body and "scopes_allowed" not in body and "software_statement" not in body
    with db.session() as s:
        row = s.get(Client, body["client_id"])
        assert row is not None
        assert "is_admin" not in row.extra_metadata and row.scopes == []


def test_registration_policy_token(db_url: str, db: Database) -> None:
    settings = make_settings(db_url, registration="token", registration_initial_access_token="let-me-in-please")
    with TestClient(create_app(settings, db=db), base_url=ISSUER) as client:
        denied = register(client)
        assert denied.status_code == 401 and denied.json()["error"] == "invalid_token"
        wrong = client.post("/register", json={"redirect_uris": [LOOPBACK]}, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = client.post("/register", json={"redirect_uris": [LOOPBACK], "token_endpoint_auth_method": "none"},
                         headers={"authorization": "Bearer let-me-in-please"})
        assert ok.status_code == 201


def test_registration_policy_off(db_url: str, db: Database) -> None:
    with TestClient(create_app(make_settings(db_url, registration="off"), db=db), base_url=ISSUER) as client:
        assert register(client).status_code in (404, 405)
        assert "registration_endpoint" not in client.get("/.well-known/oauth-authorization-server").json()


def test_registration_rate_limit_per_ip(db_url: str, db: Database) -> None:
    with TestClient(create_app(make_settings(db_url, registration_rate_limit=2), db=db), base_url=ISSUER) as client:
        assert register(client).status_code == 201
        assert register(client).status_code == 201
        third = register(client)
        assert third.status_code == 429 and third.headers["retry-after"]
    assert count(db, "clients") == 2


def test_rfc7592_read_update_delete(client: TestClient, db: Database) -> None:
    body = register(client).json()
    path = f"/register/{body['client_id']}"
    token = {"authorization": f"Bearer {body['registration_access_token']}"}
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get(path, headers=token).json()["client_name"] == "Claude Desktop"
    updated = client.put(path, headers=token, json={"client_id": body["client_id"], "redirect_uris": [LOOPBACK],
                                                     "token_endpoint_auth_method": "none", "client_name": "Renamed"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["client_name"] == "Renamed"
    other = client.put(path, headers=token, json={"client_id": "someone-else", "redirect_uris": [LOOPBACK],
                                                   "token_endpoint_auth_method": "none"})
    assert other.json()["error"] == "invalid_client_metadata"
    assert client.delete(path, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.delete(path, headers=token).status_code == 204
    assert count(db, "clients") == 0


def test_registration_token_cannot_manage_another_client(client: TestClient) -> None:
    first = register(client).json()
    second = register(client).json()
    response = client.get(f"/register/{second['client_id']}",
                          headers={"authorization": f"Bearer {first['registration_access_token']}"})
    assert response.status_code == 401


def test_registered_client_steps_up_within_the_resource_scopes(client: TestClient, db: Database) -> None:
    seed(db)
    reg = register(client).json()  # registered with scope=read:calendar only, as MCP SDKs do
    verifier, challenge = pkce_pair()
    params = authorize_params(reg["client_id"], challenge, redirect_uri=LOOPBACK, scope="read:calendar")
    location = run_flow(client, params)
    first = exchange(client, query(location)["code"], verifier, reg["client_id"], redirect_uri=LOOPBACK).json()
    assert first["scope"] == "read:calendar"
    verifier, challenge = pkce_pair()
    params = authorize_params(reg["client_id"], challenge, redirect_uri=LOOPBACK,
                              scope="read:calendar write:calendar")
    location = run_flow(client, params)
    second = exchange(client, query(location)["code"], verifier, reg["client_id"], redirect_uri=LOOPBACK).json()
    assert second["scope"] == "read:calendar write:calendar"
    # Never beyond what the resource allows.
    verifier, challenge = pkce_pair()
    response = client.get("/authorize", params=authorize_params(reg["client_id"], challenge, redirect_uri=LOOPBACK,
                                                                scope="read:email"))
    assert query(response.headers["location"])["error"] == "invalid_scope"


def test_registered_client_must_name_the_resource(client: TestClient, db: Database) -> None:
    seed(db)
    reg = register(client).json()
    _, challenge = pkce_pair()
    params = authorize_params(reg["client_id"], challenge, redirect_uri=LOOPBACK, resource="<omit>")
    response = client.get("/authorize", params=params)
    assert query(response.headers["location"])["error"] == "invalid_target"
    assert RESOURCE  # the seeded resource is only reachable when named


def test_unused_registrations_expire_and_consented_ones_stay(client: TestClient, db: Database) -> None:
    seed(db)
    unused = register(client).json()
    used = register(client).json()
    _, challenge = pkce_pair()
    run_flow(client, authorize_params(used["client_id"], challenge, redirect_uri=LOOPBACK))
    with db.session() as s:
        s.execute(update(Client).where(Client.expires_at.is_not(None))
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
    _, challenge = pkce_pair()
    expired = client.get("/authorize", params=authorize_params(unused["client_id"], challenge,
                                                                 redirect_uri=LOOPBACK))
    assert expired.status_code == 400 and "location" not in expired.headers
    with db.session() as s:
        assert purge(s, utcnow(), 10)["clients"] == 1
        assert s.get(Client, used["client_id"]) is not None


def test_cors_preflight_on_public_endpoints_only(client: TestClient) -> None:
    headers = {"origin": "https://inspector.example", "access-control-request-method": "POST"}
    for path in ("/token", "/.well-known/oauth-authorization-server", "/jwks.json"):
        response = client.options(path, headers=headers)
        assert response.status_code == 204 and response.headers["access-control-allow-origin"] == "*"
    # /register is not cross-origin by default (tests/security/test_cross_origin_registration.py).
    for path in ("/authorize", "/register"):
        assert "access-control-allow-origin" not in client.options(path, headers=headers).headers


def test_expiry_never_removes_a_client_holding_a_live_refresh_token(client: TestClient, db: Database) -> None:
    """Even when its expiry was never cleared (here: set again by hand), a client with a live
    refresh token stays: purging it would cut off a person's working connection."""
    seed(db)
    registered = register(client).json()
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(registered["client_id"], challenge, redirect_uri=LOOPBACK))
    tokens = exchange(client, query(location)["code"], verifier, registered["client_id"],
                      redirect_uri=LOOPBACK).json()
    assert tokens["refresh_token"]
    with db.session() as s:
        s.execute(update(Client).where(Client.client_id == registered["client_id"])
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
    with db.session() as s:
        assert purge(s, utcnow(), 10)["clients"] == 0
    # Once its tokens are revoked, the rule applies again.
    with db.session() as s:
        s.execute(update(RefreshToken).values(revoked_at=utcnow()))
    with db.session() as s:
        assert purge(s, utcnow(), 10)["clients"] == 1
