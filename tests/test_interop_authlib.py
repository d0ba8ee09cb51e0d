"""Interoperability with a client library we did not write: Authlib's httpx ``OAuth2Client``.

A real uvicorn serves authserver on a free 127.0.0.1 port (issuer ``http://127.0.0.1:<port>``);
Authlib builds the authorization URL and makes every token, refresh, revocation and introspection
request exactly as it would for any application. The person's part (sign in, consent) is played
by a separate httpx client with its own cookie jar that reads our HTML forms, and the final
redirect is read, never followed. The server runs with ``refresh_reuse_grace=0`` so a rotated
refresh token coming back is reuse at once. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError

from authserver.app import create_app
from authserver.db import Database
from tests.conftest import make_settings
from tests.live import serve
from tests.oauth_helpers import PASSWORD, REDIRECT, RESOURCE, World, parse_forms, query, seed

SCOPE = "read:calendar offline_access"


@dataclass(frozen=True)
class Live:
    issuer: str
    world: World
    metadata: dict[str, Any]


@pytest.fixture
def live(db_url: str, db: Database) -> Iterator[Live]:
    """authserver under uvicorn on a port bound before it starts (no race for the port)."""
    world = seed(db)
    with serve(lambda issuer: create_app(make_settings(db_url, issuer=issuer, refresh_reuse_grace=0), db=db)) as issuer:
        response = httpx.get(f"{issuer}/.well-known/oauth-authorization-server")
        assert response.status_code == 200, response.text
        yield Live(issuer, world, response.json())


def public_client(live: Live) -> OAuth2Client:
    return OAuth2Client(client_id=live.world.public_id, redirect_uri=REDIRECT, scope=SCOPE,
                        code_challenge_method="S256", token_endpoint_auth_method="none")


def confidential_client(live: Live) -> OAuth2Client:
    return OAuth2Client(client_id=live.world.confidential_id, client_secret=live.world.confidential_secret,
                        redirect_uri=REDIRECT, scope=SCOPE, code_challenge_method="S256",
                        token_endpoint_auth_method="client_secret_basic")


def act_as_person(authorization_url: str, issuer: str) -> str:
    """Sign in as alice and allow everything ticked; the final redirect's Location, not followed."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        response = browser.get(authorization_url)
        for _ in range(6):
            assert response.status_code == 303, response.text
            location = urljoin(issuer, response.headers["location"])
            if not location.startswith(f"{issuer}/interaction/"):
                return location
            page = browser.get(location)
            if page.status_code == 303:
                response = page
                continue
            assert page.status_code == 200, page.text
            if 'name="password"' in page.text:
                form = next(f for f in parse_forms(page.text) if f.value("csrf") is not None and "login" in f.action)
                data: dict[str, str | list[str]] = dict(form.fields)
                data.update({"username": "alice", "password": PASSWORD})
            else:
                form = next(f for f in parse_forms(page.text) if "consent" in f.action)
                data = dict(form.fields)
                data["scope"] = [value for name, value, checked in form.checkboxes if name == "scope" and checked]
                data["decision"] = "allow"
            response = browser.post(urljoin(location, form.action), data=data)
        raise AssertionError("the authorization did not finish")


def authorize(client: OAuth2Client, live: Live, verifier: str) -> tuple[str, str]:
    """Authlib's authorization URL, walked through by the person: (Location, state)."""
    url, state = client.create_authorization_url(live.metadata["authorization_endpoint"], code_verifier=verifier,
                                                 resource=RESOURCE)
    sent = query(url)
    assert sent["code_challenge_method"] == "S256" and sent["code_challenge"] and sent["resource"] == RESOURCE
    location = act_as_person(url, live.issuer)
    assert location.startswith(f"{REDIRECT}?"), location
    returned = query(location)
    assert returned["iss"] == live.issuer  # RFC 9207 mix-up defence: the response names its issuer exactly
    assert returned["state"] == state
    assert returned["code"]
    return location, state


def code_flow(client: OAuth2Client, live: Live) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    location, state = authorize(client, live, verifier)
    return dict(client.fetch_token(live.metadata["token_endpoint"], authorization_response=location, state=state,
                                   code_verifier=verifier, resource=RESOURCE))


def verify_access_token(live: Live, token: str) -> dict[str, Any]:
    """Verified as a resource server would: the key from jwks_uri, audience and issuer checked."""
    signing_key = jwt.PyJWKClient(live.metadata["jwks_uri"]).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(token, signing_key.key, algorithms=["ES256"], audience=RESOURCE,
                                        issuer=live.issuer, options={"require": ["exp", "iat", "sub", "jti"]})
    return claims


def assert_token_pair(live: Live, token: dict[str, Any], client_id: str) -> dict[str, Any]:
    assert token["token_type"] == "Bearer"
    assert isinstance(token["expires_in"], int) and token["expires_in"] > 0
    assert token["expires_at"] > time.time()  # Authlib computed it from expires_in
    assert token["scope"].split() == ["read:calendar", "offline_access"]
    assert token["refresh_token"] and "." not in token["refresh_token"]
    claims = verify_access_token(live, token["access_token"])
    assert claims["aud"] == RESOURCE
    assert claims["client_id"] == client_id
    assert claims["scope"] == "read:calendar"  # offline_access asks for a refresh token, it is no resource scope
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"
    return claims


def recorder(client: OAuth2Client, hook: str) -> list[httpx.Response]:
    """Keep each raw response Authlib receives before it parses (or raises on) it."""
    seen: list[httpx.Response] = []

    def keep(response: httpx.Response) -> httpx.Response:
        seen.append(response)
        return response

    client.register_compliance_hook(hook, keep)
    return seen


def test_discovery_names_the_server_url_exactly(live: Live) -> None:
    response = httpx.get(f"{live.issuer}/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == live.issuer
    assert urlsplit(metadata["issuer"]).path == ""  # no trailing slash: the iss comparison is exact
    for name in ("authorization_endpoint", "token_endpoint", "revocation_endpoint", "introspection_endpoint",
                 "jwks_uri"):
        assert metadata[name].startswith(f"{live.issuer}/"), name
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert "offline_access" in metadata["scopes_supported"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert "client_secret_basic" in metadata["token_endpoint_auth_methods_supported"]


def test_public_client_code_flow_with_pkce(live: Live) -> None:
    with public_client(live) as client:
        token = code_flow(client, live)
        claims = assert_token_pair(live, token, live.world.public_id)
        assert client.token["access_token"] == token["access_token"]  # Authlib stored what it fetched
    assert claims["iss"] == live.issuer


def test_refresh_rotates_and_reuse_is_invalid_grant(live: Live) -> None:
    endpoint = live.metadata["token_endpoint"]
    with public_client(live) as client:
        first = code_flow(client, live)
        refreshed = dict(client.refresh_token(endpoint))
        assert_token_pair(live, refreshed, live.world.public_id)
        assert refreshed["refresh_token"] != first["refresh_token"]
        assert refreshed["access_token"] != first["access_token"]
        assert client.token["refresh_token"] == refreshed["refresh_token"]

        responses = recorder(client, "refresh_token_response")
        with pytest.raises(OAuthError) as reused:
            client.refresh_token(endpoint, refresh_token=first["refresh_token"])
        assert reused.value.error == "invalid_grant"
        assert responses[-1].status_code == 400
        assert responses[-1].headers["cache-control"] == "no-store"
        # Reuse revoked the whole family: the successor is dead too.
        with pytest.raises(OAuthError) as successor:
            client.refresh_token(endpoint, refresh_token=refreshed["refresh_token"])
        assert successor.value.error == "invalid_grant"


def test_confidential_client_revokes_and_introspects(live: Live) -> None:
    with confidential_client(live) as client:
        token = code_flow(client, live)
        assert_token_pair(live, token, live.world.confidential_id)

        revoked = client.revoke_token(live.metadata["revocation_endpoint"], token=token["refresh_token"],
                                      token_type_hint="refresh_token")
        assert revoked.status_code == 200, revoked.text
        assert revoked.request.headers["authorization"].startswith("Basic ")

        introspection = live.metadata["introspection_endpoint"]
        dead = client.introspect_token(introspection, token=token["refresh_token"])
        assert dead.status_code == 200, dead.text
        assert dead.json() == {"active": False}
        assert dead.headers["cache-control"] == "no-store"

        # Revoking a refresh token ends its family, access tokens included (RFC 7009 §2.1 SHOULD).
        cascaded = client.introspect_token(introspection, token=token["access_token"])
        assert cascaded.json() == {"active": False}

        live_token = code_flow(client, live)  # a new grant, untouched by the revocation
        alive = client.introspect_token(introspection, token=live_token["access_token"],
                                        token_type_hint="access_token")
        assert alive.status_code == 200, alive.text
        assert alive.headers["cache-control"] == "no-store"
        body = alive.json()
        assert body["active"] is True
        assert body["aud"] == RESOURCE
        assert body["scope"] == "read:calendar"
        assert body["client_id"] == live.world.confidential_id
        assert body["iss"] == live.issuer
        assert body["token_type"] == "Bearer"
        assert body["jti"] == verify_access_token(live, live_token["access_token"])["jti"]

        with pytest.raises(OAuthError) as refused:
            client.refresh_token(live.metadata["token_endpoint"], refresh_token=token["refresh_token"])
        assert refused.value.error == "invalid_grant"


def test_wrong_code_verifier_is_invalid_grant(live: Live) -> None:
    with public_client(live) as client:
        responses = recorder(client, "access_token_response")
        location, state = authorize(client, live, secrets.token_urlsafe(48))
        with pytest.raises(OAuthError) as wrong:
            client.fetch_token(live.metadata["token_endpoint"], authorization_response=location, state=state,
                               code_verifier=secrets.token_urlsafe(48), resource=RESOURCE)
        assert wrong.value.error == "invalid_grant"
        error = responses[-1]
        assert error.status_code == 400
        assert error.headers["cache-control"] == "no-store"
        assert error.headers["content-type"].startswith("application/json")
        assert error.json()["error"] == "invalid_grant"
        assert "code_verifier" in error.request.content.decode()  # Authlib did send one
        assert not client.token  # nothing was stored
