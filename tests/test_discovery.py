"""RFC 8414 metadata and the JWKS."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from tests.conftest import ISSUER, make_settings


def test_metadata_issuer_is_exact_and_endpoints_are_absolute(client: TestClient) -> None:
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    body = response.json()
    assert body["issuer"] == ISSUER
    assert body["jwks_uri"] == f"{ISSUER}/jwks.json"
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert body["response_types_supported"] == ["code"]
    assert body["authorization_response_iss_parameter_supported"] is True


def test_openid_configuration_has_the_same_content(client: TestClient) -> None:
    a = client.get("/.well-known/oauth-authorization-server").json()
    b = client.get("/.well-known/openid-configuration").json()
    assert a == b


@pytest.mark.parametrize("path", [
    "/.well-known/oauth-authorization-server/tenant",
    "/.well-known/openid-configuration/tenant",
    "/tenant/.well-known/openid-configuration",
])
def test_issuer_with_path_is_served_at_every_discovery_url(db_url: str, db: Database, path: str) -> None:
    settings = make_settings(db_url, issuer="http://127.0.0.1:8000/tenant")
    with TestClient(create_app(settings, db=db), base_url=ISSUER) as client:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 200
        assert response.json()["issuer"] == "http://127.0.0.1:8000/tenant"


def test_jwks_publishes_public_keys_only(client: TestClient) -> None:
    keys = client.get("/jwks.json").json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert {key["kty"], key["crv"], key["alg"], key["use"]} == {"EC", "P-256", "ES256", "sig"}
    assert key["kid"]
    assert "d" not in key


def test_security_headers_on_every_response(client: TestClient) -> None:
    response = client.get("/jwks.json")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_oversized_body_is_refused_with_413(client: TestClient) -> None:
    response = client.post("/token", content=b"x" * (65 * 1024),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


def test_issuer_with_path_serves_every_endpoint_it_advertises(db_url: str, db: Database) -> None:
    """Served at the host root, an issuer with a path has its endpoints under that path, as advertised."""
    from urllib.parse import urlsplit

    from tests.oauth_helpers import authorize_params, exchange, pkce_pair, query, run_flow, seed

    issuer = "http://127.0.0.1:8000/tenant"
    world = seed(db)
    with TestClient(create_app(make_settings(db_url, issuer=issuer), db=db), base_url=ISSUER,
                    follow_redirects=False) as client:
        metadata = client.get("/.well-known/oauth-authorization-server/tenant").json()
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri", "registration_endpoint"):
            assert urlsplit(metadata[name]).path.startswith("/tenant/"), name
        assert client.get(urlsplit(metadata["jwks_uri"]).path).status_code == 200
        verifier, challenge = pkce_pair()
        params = authorize_params(world.public_id, challenge)
        response = client.get(urlsplit(metadata["authorization_endpoint"]).path, params=params)
        assert response.headers["location"].startswith("/tenant/interaction/")
        page = client.get(response.headers["location"])
        assert 'action="/tenant/interaction/' in page.text and "/tenant/static/style.css" in page.text
        location = run_flow(client, params, authorize_path="/tenant/authorize")
        assert query(location)["iss"] == issuer
        token = exchange(client, query(location)["code"], verifier, world.public_id, token_path="/tenant/token")
        assert token.status_code == 200, token.text
        assert client.get("/authorize", params=params).status_code == 404
