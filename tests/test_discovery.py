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
