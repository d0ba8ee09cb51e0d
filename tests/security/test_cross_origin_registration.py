"""Cross-origin registration: a web page must not register clients from its visitors' browsers.

``/register`` used to answer CORS for any origin (``*``), so any page could make each visitor's
browser register a client (spending that visitor's address in the registration limit, reading the
answer). MCP clients are not browsers: CORS on ``/register`` is now off unless the operator lists
exact origins in AUTHSERVER_REGISTRATION_CORS_ORIGINS. Token, metadata, JWKS and revocation keep
their public CORS.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from authserver.settings import ConfigError, load_settings
from tests.conftest import ISSUER, make_settings

PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
BODY = {"redirect_uris": ["https://app.example.com/cb"], "client_name": "From a page"}


def test_preflight_and_post_from_an_arbitrary_origin_get_no_cors(client: TestClient) -> None:
    origin = {"origin": "https://attacker.example"}
    preflight = client.options("/register", headers={**PREFLIGHT, **origin})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-methods" not in preflight.headers
    posted = client.post("/register", json=BODY, headers=origin)
    assert "access-control-allow-origin" not in posted.headers  # the browser withholds the answer
    config = client.options("/register/some-client", headers={**PREFLIGHT, **origin})
    assert "access-control-allow-origin" not in config.headers


def test_token_metadata_jwks_and_revoke_keep_public_cors(client: TestClient) -> None:
    for path in ("/token", "/revoke", "/jwks.json", "/.well-known/oauth-authorization-server"):
        response = client.options(path, headers={**PREFLIGHT, "origin": "https://inspector.example"})
        assert response.headers.get("access-control-allow-origin") == "*", path


def test_an_allowed_origin_gets_cors_and_others_still_do_not(db_url: str, db: Database) -> None:
    settings = make_settings(db_url, registration_cors_origins=["https://console.example", "http://localhost:6274"])
    with TestClient(create_app(settings, db=db), base_url=ISSUER, follow_redirects=False) as client:
        allowed = client.options("/register", headers={**PREFLIGHT, "origin": "https://console.example"})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "https://console.example"
        assert "Origin" in allowed.headers["vary"] and "POST" in allowed.headers["access-control-allow-methods"]
        posted = client.post("/register", json=BODY, headers={"origin": "http://localhost:6274"})
        assert posted.status_code == 201
        assert posted.headers["access-control-allow-origin"] == "http://localhost:6274"
        for other in ("https://attacker.example", "https://console.example.attacker.example", "null"):
            refused = client.options("/register", headers={**PREFLIGHT, "origin": other})
            assert "access-control-allow-origin" not in refused.headers, other
            assert "access-control-allow-origin" not in client.post(
                "/register", json=BODY, headers={"origin": other}).headers


@pytest.mark.parametrize("value", ['["*"]', '["https://console.example/path"]', '["console.example"]'])
def test_registration_cors_origins_must_be_exact_origins(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSERVER_REGISTRATION_CORS_ORIGINS", value)
    with pytest.raises(ConfigError, match="AUTHSERVER_REGISTRATION_CORS_ORIGINS"):
        load_settings()
