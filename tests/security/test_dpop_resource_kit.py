"""DPoP at the resource server (RFC 9449 §7), attacked: the kit's middleware in front of an MCP endpoint.

authserver runs on uvicorn on 127.0.0.1 (SQLite and PostgreSQL) and issues real DPoP-bound
tokens from its token endpoint; the resource server (the kit's middleware around a Starlette
app) is driven through Starlette's TestClient and fetches the issuer's metadata and JWKS, or
introspects, over real HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.catalog.repository import create_resource, create_scope
from authserver.clients.repository import NewClient, create_client
from authserver.db import Database
from authserver.resource import BearerAuthMiddleware, BearerVerifier
from authserver.resource.dpop import DPoPVerifier, ReplayCache
from tests.conftest import make_settings
from tests.live import serve
from tests.security.dpop_helpers import DPoPKey

RESOURCE = "https://mcp.example.com/mcp"
RS_URL = RESOURCE  # what clients call, and so the htu of their proofs


@dataclass
class LiveAS:
    issuer: str
    machine: tuple[str, str]  # a client_credentials client
    rs: tuple[str, str]  # the resource server's own client (may introspect)

    def token(self, key: DPoPKey | None) -> str:
        headers = {"DPoP": key.proof(htu=f"{self.issuer}/token")} if key else {}
        response = httpx.post(f"{self.issuer}/token", data={"grant_type": "client_credentials",
                                                             "resource": RESOURCE}, auth=self.machine,
                              headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == ("DPoP" if key else "Bearer")
        return str(response.json()["access_token"])


@pytest.fixture
def live_as(db_url: str, db: Database) -> Iterator[LiveAS]:
    with db.session() as s:
        create_scope(s, "mcp:tools", "Use the MCP tools")
        create_resource(s, RESOURCE, "Calendar MCP", ["mcp:tools"])
        machine = create_client(s, NewClient(name="machine", grant_types=["client_credentials"],
                                             scopes=["mcp:tools"], resources=[RESOURCE]))
        rs = create_client(s, NewClient(name="rs", grant_types=["client_credentials"], resources=[RESOURCE],
                                        can_introspect=True))
        assert machine.client_secret and rs.client_secret
        creds = ((machine.client.client_id, machine.client_secret), (rs.client.client_id, rs.client_secret))
    with serve(lambda base: create_app(make_settings(db_url, issuer=base), db=db)) as issuer:
        yield LiveAS(issuer, *creds)


def protected(verifier: BearerVerifier) -> Any:
    async def mcp(request: Request) -> JSONResponse:
        auth = request.state.auth
        return JSONResponse({"sub": auth.subject, "jkt": auth.jkt})

    app = Starlette(routes=[Route("/mcp", mcp, methods=["GET", "POST"])])
    return BearerAuthMiddleware(app, verifier, required_scopes=["mcp:tools"])


@pytest.fixture(params=["jwt", "introspection"])
def rs(request: pytest.FixtureRequest, live_as: LiveAS) -> Iterator[TestClient]:
    """The resource server, verifying tokens locally (JWKS) or by introspection."""
    options: dict[str, Any] = {}
    if request.param == "introspection":
        options = {"introspection": "always", "client_id": live_as.rs[0], "client_secret": live_as.rs[1]}
    verifier = BearerVerifier(issuer=live_as.issuer, resource=RESOURCE, **options)
    # The server is reached at an internal address; clients address it by its public URL.
    with TestClient(protected(verifier), base_url="http://10.0.0.7:9000") as client:
        yield client


def call(rs: TestClient, token: str, proof: str | None = None, *, scheme: str = "DPoP", method: str = "POST",
         extra: list[tuple[str, str]] | None = None) -> httpx.Response:
    headers = [("Authorization", f"{scheme} {token}"), *(extra or [])]
    if proof is not None:
        headers.append(("DPoP", proof))
    return rs.request(method, "/mcp", headers=headers)


def challenged(response: httpx.Response, error: str, scheme: str = "DPoP") -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f"{scheme} "), challenge
    assert f'error="{error}"' in challenge, challenge
    if scheme == "DPoP":
        assert 'algs="ES256' in challenge, challenge


# ---- accepted -------------------------------------------------------------------------------------


def test_dpop_bound_token_with_a_valid_proof_is_accepted(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token = live_as.token(key)
    response = call(rs, token, key.proof(htu=RS_URL, access_token=token))
    assert response.status_code == 200, response.text
    assert response.json()["jkt"] == key.jkt
    # Each request brings its own proof; GET is bound as GET.
    assert call(rs, token, key.proof(htm="GET", htu=RS_URL, access_token=token), method="GET").status_code == 200


def test_bearer_token_still_works_with_the_bearer_scheme(live_as: LiveAS, rs: TestClient) -> None:
    assert call(rs, live_as.token(None), scheme="Bearer").status_code == 200


# ---- refused --------------------------------------------------------------------------------------


def test_dpop_bound_token_used_as_plain_bearer_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    """RFC 9449 §7.2: a stolen bound token must not work without the key."""
    challenged(call(rs, live_as.token(DPoPKey()), scheme="Bearer"), "invalid_token")


def test_bearer_token_presented_with_the_dpop_scheme_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token = live_as.token(None)
    challenged(call(rs, token, key.proof(htu=RS_URL, access_token=token)), "invalid_token")


def test_dpop_bound_token_without_a_proof_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    challenged(call(rs, live_as.token(DPoPKey())), "invalid_dpop_proof")


def test_missing_ath_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    challenged(call(rs, live_as.token(key), key.proof(htu=RS_URL)), "invalid_dpop_proof")


def test_ath_of_another_token_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token, other = live_as.token(key), live_as.token(key)
    challenged(call(rs, token, key.proof(htu=RS_URL, access_token=other)), "invalid_dpop_proof")


@pytest.mark.parametrize("htu", ["https://mcp.example.com/other", "https://evil.example.com/mcp",
                                 "http://10.0.0.7:9000/mcp", "http://mcp.example.com/mcp"])
def test_wrong_htu_at_the_resource_server_is_refused(live_as: LiveAS, rs: TestClient, htu: str) -> None:
    key = DPoPKey()
    token = live_as.token(key)
    challenged(call(rs, token, key.proof(htu=htu, access_token=token)), "invalid_dpop_proof")


def test_wrong_htm_at_the_resource_server_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token = live_as.token(key)
    challenged(call(rs, token, key.proof(htm="GET", htu=RS_URL, access_token=token)), "invalid_dpop_proof")


def test_replayed_proof_at_the_resource_server_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token = live_as.token(key)
    proof = key.proof(htu=RS_URL, access_token=token)
    assert call(rs, token, proof).status_code == 200
    challenged(call(rs, token, proof), "invalid_dpop_proof")


def test_stale_iat_at_the_resource_server_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token = live_as.token(key)
    challenged(call(rs, token, key.proof(htu=RS_URL, access_token=token, iat=int(time.time()) - 120)),
               "invalid_dpop_proof")


def test_future_iat_at_the_resource_server_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token = live_as.token(key)
    challenged(call(rs, token, key.proof(htu=RS_URL, access_token=token, iat=int(time.time()) + 60)),
               "invalid_dpop_proof")


def test_proof_by_a_key_other_than_the_bound_one_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    """The thief has the token and a key of their own: cnf.jkt names the victim's key."""
    token = live_as.token(DPoPKey())
    thief = DPoPKey()
    challenged(call(rs, token, thief.proof(htu=RS_URL, access_token=token)), "invalid_dpop_proof")


def test_two_dpop_headers_at_the_resource_server_are_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token = live_as.token(key)
    response = call(rs, token, key.proof(htu=RS_URL, access_token=token),
                    extra=[("DPoP", key.proof(htu=RS_URL, access_token=token))])
    challenged(response, "invalid_dpop_proof")


def test_private_key_in_the_proof_jwk_at_the_resource_server_is_refused(live_as: LiveAS, rs: TestClient) -> None:
    key = DPoPKey()
    token = live_as.token(key)
    challenged(call(rs, token, key.proof(htu=RS_URL, access_token=token, jwk=key.private_jwk)),
               "invalid_dpop_proof")


def test_invalid_bearer_token_keeps_the_bearer_challenge(live_as: LiveAS, rs: TestClient) -> None:
    response = call(rs, "not-a-token", scheme="Bearer")
    challenged(response, "invalid_token", scheme="Bearer")
    assert "algs=" not in response.headers["www-authenticate"]


# ---- resource-server nonces -----------------------------------------------------------------------


def test_resource_server_nonce_is_demanded_then_accepted(live_as: LiveAS) -> None:
    verifier = BearerVerifier(issuer=live_as.issuer, resource=RESOURCE,
                              dpop=DPoPVerifier(nonce_secret=b"rs nonce secret 0123456789abcdef"))
    key = DPoPKey()
    token = live_as.token(key)
    with TestClient(protected(verifier), base_url="http://10.0.0.7:9000") as rs:
        first = call(rs, token, key.proof(htu=RS_URL, access_token=token))
        challenged(first, "use_dpop_nonce")
        nonce = first.headers["dpop-nonce"]
        second = call(rs, token, key.proof(htu=RS_URL, access_token=token, nonce=nonce))
        assert second.status_code == 200, second.text


# ---- the replay cache itself (no storage involved) ------------------------------------------------


def test_replay_cache_stays_bounded_and_forgets_only_expired_or_oldest_entries() -> None:
    cache = ReplayCache(max_entries=3)
    now = 1000.0
    assert cache.claim("a", now + 60, now) and not cache.claim("a", now + 60, now)
    for key in ("b", "c", "d"):
        assert cache.claim(key, now + 60, now)
    assert len(cache) == 3
    assert not cache.claim("d", now + 60, now)  # recent entries are still refused
    assert cache.claim("a", now + 60, now)  # the oldest made room
    assert cache.claim("e", now + 200, now + 100)  # everything expired goes first
    assert len(cache) == 1
