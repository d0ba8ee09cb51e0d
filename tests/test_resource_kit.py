"""The resource-server kit against a real authserver over real HTTP (no mocked transport).

Each test that needs tokens starts authserver with uvicorn on a free 127.0.0.1 port
(on SQLite and on PostgreSQL) and mints tokens with its key ring. The verifier then
discovers the issuer's metadata and JWKS exactly as an MCP server in production
would. Introspection goes to authserver's real RFC 7662 endpoint (``/introspect``),
authenticated with ``client_secret_basic`` as a confidential client that the test
registers in the same database (``can_introspect`` for the resource), so the kit's
introspection client is exercised against the real server over a real socket too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import authserver.resource as kit
from authserver.app import create_app
from authserver.catalog.repository import create_resource, create_scope
from authserver.clients.models import Client
from authserver.clients.repository import NewClient, create_client, rotate_secret
from authserver.db import Database, utcnow
from authserver.keys.ring import KeyRing
from authserver.resource import (
    AuthServerUnavailableError,
    BearerAuthMiddleware,
    BearerVerifier,
    InvalidTokenError,
    VerifiedToken,
    authorization_server_metadata_url,
    metadata_paths,
    protected_resource_metadata,
    protected_resource_routes,
    resource_metadata_url,
)
from authserver.resource.introspection import basic_auth
from authserver.tokens.access import issue_access_token
from authserver.tokens.refresh import deny_access_token
from tests.conftest import make_settings
from tests.live import serve

pytestmark = pytest.mark.anyio

RESOURCE = "https://mcp.example.com/mcp"
METADATA_URL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
OTHER_RESOURCE = "https://other.example.com"
RS_CLIENT_ID = "rs:calendar/+ü"  # characters that client_secret_basic must form-encode before Base64
INTROSPECT_PATH = "/introspect"
WELL_KNOWN_AS = "/.well-known/oauth-authorization-server"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


# --------------------------------------------------------------------------- live authserver


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str


@dataclass
class LiveAS:
    issuer: str
    keys: KeyRing
    db: Database

    @property
    def introspection_endpoint(self) -> str:
        return self.issuer + INTROSPECT_PATH

    def register_resources(self) -> None:
        """The scopes and resources the tokens of these tests are for, registered at authserver."""
        with self.db.session() as session:
            create_scope(session, "mcp:tools", "Use the MCP tools")
            create_scope(session, "read:calendar", "Read your calendar")
            create_resource(session, RESOURCE, "Calendar MCP", ["mcp:tools", "read:calendar"])
            create_resource(session, OTHER_RESOURCE, "Other MCP", ["mcp:tools"])
            # The client the tokens are issued to: introspection reports tokens of unknown clients inactive.
            create_client(session, NewClient(name="client-1", client_id="client-1", grant_types=["client_credentials"],
                                             resources=[RESOURCE, OTHER_RESOURCE]))

    def client(self, client_id: str, *, resources: list[str], can_introspect: bool = False) -> Credentials:
        """A confidential (client_secret_basic) client, registered in authserver's database."""
        with self.db.session() as session:
            existing = session.get(Client, client_id)
            if existing is not None:  # client-1 is registered with the resources; give it a secret to use
                existing.resources, existing.can_introspect = list(resources), can_introspect
                return Credentials(client_id, rotate_secret(session, client_id))
            created = create_client(session, NewClient(
                name=client_id, client_id=client_id, grant_types=["client_credentials"], resources=resources,
                can_introspect=can_introspect))
            assert created.client_secret is not None
            return Credentials(created.client.client_id, created.client_secret)

    def deny(self, token: str) -> None:
        """Revoke an access token at authserver: its jti goes on the deny list (what ``/revoke`` does)."""
        claims = jwt.decode(token, options={"verify_signature": False})
        with self.db.session() as session:
            deny_access_token(session, claims["jti"], datetime.fromtimestamp(claims["exp"], UTC), utcnow())

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": "alice", "aud": RESOURCE, "client_id": "client-1",
                                  "scope": "mcp:tools", "iat": now, "nbf": now, "exp": now + 600, "jti": "j-1"}
        claims.update(overrides)
        return claims

    def token(self, *, audience: str = RESOURCE, scopes: tuple[str, ...] = ("mcp:tools",), ttl: int = 600,
              now: int | None = None, issuer: str | None = None, subject: str = "alice",
              client_id: str = "client-1", extra: dict[str, Any] | None = None) -> str:
        return issue_access_token(self.keys, issuer=issuer or self.issuer, subject=subject, audience=audience,
                                  client_id=client_id, scopes=list(scopes), ttl=ttl,
                                  now=int(time.time()) if now is None else now, auth_time=None,
                                  extra=extra).token

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """Sign arbitrary claims with the real current key (for malformed-but-signed tokens)."""
        signing = self.keys.snapshot().signing
        headers = {"kid": signing.kid, **header}
        return jwt.encode(claims, signing.private_key, algorithm="ES256", headers=headers)

    @property
    def kid(self) -> str:
        return self.keys.snapshot().signing.kid


@pytest.fixture
def live_as(db_url: str, db: Database) -> Iterator[LiveAS]:
    apps: list[Any] = []

    def make(issuer: str) -> Any:
        apps.append(create_app(make_settings(db_url, issuer=issuer), db=db))
        return apps[0]

    with serve(make) as issuer:
        yield LiveAS(issuer=issuer, keys=apps[0].state.services.keys, db=db)


class Recorder:
    """A real httpx client that remembers which paths it requested, and which tokens it introspected."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.introspected: list[str] = []

        async def hook(request: httpx.Request) -> None:
            self.paths.append(request.url.path)
            if request.method == "POST" and request.url.path == INTROSPECT_PATH:
                self.introspected.append(parse_qs(request.content.decode())["token"][0])

        self.client = httpx.AsyncClient(event_hooks={"request": [hook]})

    def count(self, path: str) -> int:
        return self.paths.count(path)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    async with rec.client:
        yield rec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _verifier(live: LiveAS, recorder: Recorder | None = None, **kwargs: Any) -> BearerVerifier:
    kwargs.setdefault("issuer", live.issuer)
    kwargs.setdefault("resource", RESOURCE)
    return BearerVerifier(http_client=recorder.client if recorder else None, **kwargs)


async def _rejected(verifier: BearerVerifier, token: str) -> InvalidTokenError:
    with pytest.raises(InvalidTokenError) as info:
        await verifier.verify(token)
    assert info.value.error == "invalid_token"
    assert info.value.status_code == 401
    return info.value


# --------------------------------------------------------------------------- verifier: good tokens


async def test_valid_token_is_verified_via_discovery(live_as: LiveAS, recorder: Recorder) -> None:
    verifier = _verifier(live_as, recorder)
    now = int(time.time())
    issued = issue_access_token(live_as.keys, issuer=live_as.issuer, subject="alice", audience=RESOURCE,
                                client_id="client-1", scopes=["mcp:tools", "read:calendar"], ttl=600, now=now,
                                auth_time=now - 5)
    verified = await verifier.verify(issued.token)
    assert isinstance(verified, VerifiedToken)
    assert verified.subject == "alice"
    assert verified.client_id == "client-1"
    assert verified.scopes == ("mcp:tools", "read:calendar")
    assert verified.audience == RESOURCE
    assert verified.expires_at == now + 600
    assert verified.jti == issued.jti
    assert verified.claims["iss"] == live_as.issuer
    assert verified.claims["auth_time"] == now - 5
    assert verified.has_scopes("read:calendar") and not verified.has_scopes("write:calendar")
    assert recorder.paths == ["/.well-known/oauth-authorization-server", "/jwks.json"]
    # The keys are cached: more tokens cost no more requests.
    for _ in range(3):
        await verifier.verify(live_as.token())
    assert len(recorder.paths) == 2


async def test_configured_jwks_uri_skips_discovery(live_as: LiveAS, recorder: Recorder) -> None:
    verifier = _verifier(live_as, recorder, jwks_uri=f"{live_as.issuer}/jwks.json")
    assert (await verifier.verify(live_as.token())).subject == "alice"
    assert recorder.paths == ["/jwks.json"]


async def test_verifier_without_a_client_makes_its_own(live_as: LiveAS) -> None:
    assert (await _verifier(live_as).verify(live_as.token())).client_id == "client-1"


async def test_audience_list_containing_the_resource_is_accepted(live_as: LiveAS) -> None:
    token = live_as.token(extra={"aud": ["https://other.example.com", RESOURCE]})
    assert (await _verifier(live_as).verify(token)).audience == RESOURCE


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
async def test_access_token_typ_spellings_are_accepted(live_as: LiveAS, typ: str) -> None:
    token = live_as.sign(live_as.claims(), typ=typ)
    assert (await _verifier(live_as).verify(token)).subject == "alice"


async def test_expiry_within_leeway_is_accepted(live_as: LiveAS) -> None:
    token = live_as.token(now=int(time.time()) - 610, ttl=600)  # expired 10 s ago
    assert (await _verifier(live_as, leeway=30).verify(token)).subject == "alice"
    await _rejected(_verifier(live_as, leeway=0), token)


# --------------------------------------------------------------------------- verifier: attacks


async def test_alg_none_is_rejected(live_as: LiveAS) -> None:
    token = f"{_segment({'alg': 'none', 'typ': 'at+jwt', 'kid': live_as.kid})}.{_segment(live_as.claims())}."
    error = await _rejected(_verifier(live_as), token)
    assert "algorithm" in error.description


async def test_hs256_signed_with_the_public_key_is_rejected(live_as: LiveAS) -> None:
    public_pem = live_as.keys.snapshot().public_keys[live_as.kid].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_json = json.dumps(live_as.keys.snapshot().jwks["keys"][0]).encode()
    header = _segment({"alg": "HS256", "typ": "at+jwt", "kid": live_as.kid})
    for secret in (public_pem, jwk_json):
        signing_input = f"{header}.{_segment(live_as.claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        error = await _rejected(_verifier(live_as), f"{signing_input}.{_b64(mac)}")
        assert "algorithm" in error.description


async def test_unknown_kid_refetches_once_then_is_rate_limited(live_as: LiveAS, recorder: Recorder) -> None:
    clock = Clock()
    verifier = _verifier(live_as, recorder, clock=clock, jwks_refetch_interval=10)
    await verifier.verify(live_as.token())
    assert recorder.count("/jwks.json") == 1
    foreign = ec.generate_private_key(ec.SECP256R1())
    clock.now += 11
    sprayed = jwt.encode(live_as.claims(), foreign, algorithm="ES256", headers={"typ": "at+jwt", "kid": "kid-0"})
    error = await _rejected(verifier, sprayed)
    assert "unknown key" in error.description
    assert recorder.count("/jwks.json") == 2  # refetched once: maybe the key was just rotated in
    for i in range(1, 20):  # kid spraying within the interval costs the authorization server nothing
        token = jwt.encode(live_as.claims(), foreign, algorithm="ES256", headers={"typ": "at+jwt", "kid": f"kid-{i}"})
        await _rejected(verifier, token)
    assert recorder.count("/jwks.json") == 2
    clock.now += 11
    await _rejected(verifier, sprayed)
    assert recorder.count("/jwks.json") == 3


async def test_tampered_payload_is_rejected(live_as: LiveAS) -> None:
    header, _, signature = live_as.token().split(".")
    forged = f"{header}.{_segment(live_as.claims(scope='mcp:tools admin'))}.{signature}"
    error = await _rejected(_verifier(live_as), forged)
    assert error.description == "token signature is invalid"


async def test_wrong_issuer_is_rejected(live_as: LiveAS) -> None:
    error = await _rejected(_verifier(live_as), live_as.token(issuer="http://127.0.0.1:1"))
    assert "another authorization server" in error.description


async def test_token_for_another_resource_is_rejected(live_as: LiveAS) -> None:
    error = await _rejected(_verifier(live_as), live_as.token(audience="https://other.example.com/mcp"))
    assert error.description == "token was not issued for this resource"


async def test_expired_token_is_rejected(live_as: LiveAS) -> None:
    error = await _rejected(_verifier(live_as), live_as.token(now=int(time.time()) - 1000, ttl=600))
    assert error.description == "token has expired"


async def test_token_not_yet_valid_is_rejected(live_as: LiveAS) -> None:
    later = int(time.time()) + 600
    error = await _rejected(_verifier(live_as), live_as.sign(live_as.claims(nbf=later, iat=later), typ="at+jwt"))
    assert error.description == "token is not valid yet"


@pytest.mark.parametrize("typ", [None, "JWT", "id_token+jwt"])
async def test_missing_or_wrong_typ_is_rejected(live_as: LiveAS, typ: str | None) -> None:
    token = live_as.sign(live_as.claims(), typ=typ)  # typ None: pyjwt leaves the parameter out
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==")).get("typ") == typ
    error = await _rejected(_verifier(live_as), token)
    assert "typ" in error.description


@pytest.mark.parametrize("claim", ["client_id", "sub", "jti", "exp"])
async def test_missing_required_claim_is_rejected(live_as: LiveAS, claim: str) -> None:
    claims = live_as.claims()
    del claims[claim]
    error = await _rejected(_verifier(live_as), live_as.sign(claims, typ="at+jwt"))
    assert claim in error.description


async def test_foreign_key_with_a_copied_kid_is_rejected(live_as: LiveAS) -> None:
    foreign = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(live_as.claims(), foreign, algorithm="ES256", headers={"typ": "at+jwt", "kid": live_as.kid})
    error = await _rejected(_verifier(live_as), token)
    assert error.description == "token signature is invalid"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 10_000, "ey.ünïcode.x"])
async def test_garbage_is_rejected(live_as: LiveAS, token: str) -> None:
    await _rejected(_verifier(live_as), token)


async def test_key_rotation_is_picked_up_by_refetching_on_unknown_kid(live_as: LiveAS, recorder: Recorder) -> None:
    clock = Clock()
    verifier = _verifier(live_as, recorder, clock=clock)
    old_token = live_as.token()
    await verifier.verify(old_token)
    old_kid = live_as.kid
    new_kid = live_as.keys.rotate()
    assert new_kid != old_kid
    new_token = live_as.token()
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    clock.now += 60  # the JWKS is still fresh (max-age 300), but the refetch interval has passed
    assert (await verifier.verify(new_token)).subject == "alice"
    assert (await verifier.verify(old_token)).subject == "alice"  # retired keys stay published
    assert recorder.count("/jwks.json") == 2


async def test_jwks_max_age_is_respected_and_capped(live_as: LiveAS, recorder: Recorder) -> None:
    clock = Clock()
    verifier = _verifier(live_as, recorder, clock=clock, jwks_max_ttl=120)
    token = live_as.token()
    await verifier.verify(token)
    clock.now += 100
    await verifier.verify(token)
    assert recorder.count("/jwks.json") == 1
    clock.now += 30  # authserver says max-age=300, but the cap is 120 s
    await verifier.verify(token)
    assert recorder.count("/jwks.json") == 2


async def test_issuer_must_match_the_metadata_exactly(live_as: LiveAS) -> None:
    verifier = _verifier(live_as, issuer=live_as.issuer + "/")
    with pytest.raises(AuthServerUnavailableError) as info:
        await verifier.verify(live_as.token(issuer=live_as.issuer + "/"))
    assert info.value.status_code == 503
    assert info.value.error == "temporarily_unavailable"


async def test_unreachable_authorization_server_is_unavailable_and_not_hammered(recorder: Recorder) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    clock = Clock()
    verifier = BearerVerifier(issuer=f"http://127.0.0.1:{port}", resource=RESOURCE, http_client=recorder.client,
                              clock=clock, timeout=2)
    signer = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode({"sub": "x"}, signer, algorithm="ES256", headers={"typ": "at+jwt", "kid": "k"})
    for _ in range(3):
        with pytest.raises(AuthServerUnavailableError):
            await verifier.verify(token)
    assert len(recorder.paths) == 1


def test_unsafe_configurations_are_refused() -> None:
    for algorithms in (["none"], ["HS256"], ["ES256", "HS512"], []):
        with pytest.raises(ValueError, match="algorithms"):
            BearerVerifier(issuer="https://auth.example.com", resource=RESOURCE, algorithms=algorithms)
    with pytest.raises(ValueError, match="https"):
        BearerVerifier(issuer="http://auth.example.com", resource=RESOURCE)
    with pytest.raises(ValueError, match="https"):
        BearerVerifier(issuer="https://auth.example.com", resource=RESOURCE, jwks_uri="http://keys.example.com/")
    with pytest.raises(ValueError, match="client_id"):
        BearerVerifier(issuer="https://auth.example.com", resource=RESOURCE, introspection="fallback")
    BearerVerifier(issuer="https://auth.example.com", resource=RESOURCE, algorithms=["ES256", "EdDSA", "PS256"])


# --------------------------------------------------------------------------- introspection


@pytest.fixture
def rs_client(live_as: LiveAS) -> Credentials:
    """The resource server's own client at authserver: confidential, may introspect tokens for RESOURCE."""
    live_as.register_resources()
    return live_as.client(RS_CLIENT_ID, resources=[RESOURCE], can_introspect=True)


def _introspecting(live: LiveAS, rs: Credentials, mode: str, recorder: Recorder | None = None,
                   **kwargs: Any) -> BearerVerifier:
    kwargs.setdefault("introspection_endpoint", live.introspection_endpoint)
    kwargs.setdefault("client_id", rs.client_id)
    kwargs.setdefault("client_secret", rs.client_secret)
    return _verifier(live, recorder, introspection=mode, **kwargs)


async def test_introspection_always_sees_revocation(live_as: LiveAS, rs_client: Credentials,
                                                    recorder: Recorder) -> None:
    verifier = _introspecting(live_as, rs_client, "always", recorder)
    token = live_as.token(scopes=("mcp:tools", "read:calendar"))
    verified = await verifier.verify(token)
    assert (verified.subject, verified.client_id, verified.scopes) == ("alice", "client-1",
                                                                       ("mcp:tools", "read:calendar"))
    assert verified.audience == RESOURCE and verified.jti is not None
    live_as.deny(token)
    error = await _rejected(verifier, token)
    assert error.description == "token is not active"
    assert recorder.introspected == [token, token]
    assert recorder.paths == [INTROSPECT_PATH, INTROSPECT_PATH]  # "always" needs neither metadata nor keys


async def test_introspection_rejects_an_active_token_for_another_resource(live_as: LiveAS,
                                                                          rs_client: Credentials) -> None:
    token = live_as.token(audience=OTHER_RESOURCE)
    # authserver tells a resource server only about tokens for the resources it is registered for ...
    error = await _rejected(_introspecting(live_as, rs_client, "always"), token)
    assert error.description == "token is not active"
    # ... and when it does say "active" (a client registered for both), the kit still checks the audience.
    both = live_as.client("rs:both", resources=[RESOURCE, OTHER_RESOURCE], can_introspect=True)
    error = await _rejected(_introspecting(live_as, both, "always"), token)
    assert error.description == "token was not issued for this resource"


async def test_fallback_introspects_only_what_cannot_be_judged_locally(live_as: LiveAS, rs_client: Credentials,
                                                                       recorder: Recorder) -> None:
    verifier = _introspecting(live_as, rs_client, "fallback", recorder)
    assert (await verifier.verify(live_as.token())).subject == "alice"
    await _rejected(verifier, live_as.token(now=int(time.time()) - 1000))  # expired: final, no round trip
    await _rejected(verifier, live_as.token(audience="https://other.example.com"))
    assert recorder.introspected == []
    error = await _rejected(verifier, "opaque-token-value")  # not a JWT: ask the authorization server
    assert error.description == "token is not active"
    foreign = ec.generate_private_key(ec.SECP256R1())
    unknown_kid = jwt.encode(live_as.claims(), foreign, algorithm="ES256", headers={"typ": "at+jwt", "kid": "zz"})
    await _rejected(verifier, unknown_kid)
    assert recorder.introspected == ["opaque-token-value", unknown_kid]


async def test_introspection_with_bad_credentials_is_unavailable_not_invalid(live_as: LiveAS,
                                                                             rs_client: Credentials) -> None:
    verifier = _introspecting(live_as, rs_client, "always", client_secret="wrong")
    with pytest.raises(AuthServerUnavailableError) as info:
        await verifier.verify(live_as.token())
    assert "401" in info.value.description


async def test_introspection_endpoint_is_discovered_from_the_metadata(live_as: LiveAS, rs_client: Credentials,
                                                                      recorder: Recorder) -> None:
    verifier = _introspecting(live_as, rs_client, "always", recorder, introspection_endpoint=None)
    token = live_as.token()
    assert (await verifier.verify(token)).subject == "alice"
    assert recorder.paths == [WELL_KNOWN_AS, INTROSPECT_PATH]
    live_as.deny(token)
    assert (await _rejected(verifier, token)).description == "token is not active"
    assert recorder.paths == [WELL_KNOWN_AS, INTROSPECT_PATH, INTROSPECT_PATH]  # the metadata is cached
    # "fallback" discovers it the same way, for a token it cannot judge locally (no keys fetched for it).
    recorder.paths.clear()
    fallback = _introspecting(live_as, rs_client, "fallback", recorder, introspection_endpoint=None)
    assert (await _rejected(fallback, "opaque-token-value")).description == "token is not active"
    assert recorder.paths == [WELL_KNOWN_AS, INTROSPECT_PATH]
    metadata = (await recorder.client.get(authorization_server_metadata_url(live_as.issuer))).json()
    assert metadata["introspection_endpoint"] == live_as.introspection_endpoint


async def test_revocation_is_seen_only_through_introspection(live_as: LiveAS, rs_client: Credentials) -> None:
    """Why introspection exists: a revoked JWT keeps a valid signature, audience and expiry until it expires."""
    issuer_client = live_as.client("client-1", resources=[RESOURCE])  # the client the tokens are issued to
    token = live_as.token()
    local = _verifier(live_as)
    fallback = _introspecting(live_as, rs_client, "fallback")
    always = _introspecting(live_as, rs_client, "always")
    for verifier in (local, fallback, always):
        assert (await verifier.verify(token)).subject == "alice"
    async with httpx.AsyncClient() as http:
        revoked = await http.post(f"{live_as.issuer}/revoke", data={"token": token, "token_type_hint": "access_token"},
                                  headers={"Authorization": basic_auth("client-1", issuer_client.client_secret)})
    assert revoked.status_code == 200
    assert (await local.verify(token)).subject == "alice"  # nothing in the token can tell it was revoked
    assert (await fallback.verify(token)).subject == "alice"  # judged locally: authserver is never asked
    error = await _rejected(always, token)
    assert error.description == "token is not active"


def test_client_secret_basic_form_encodes_before_base64() -> None:
    header = basic_auth("a b:c", "p@ss:wörd")
    decoded = base64.b64decode(header.removeprefix("Basic ")).decode()
    assert decoded == "a%20b%3Ac:p%40ss%3Aw%C3%B6rd"


# --------------------------------------------------------------------------- middleware


def _protected_app(verifier: BearerVerifier, required: tuple[str, ...] = ("mcp:tools",)) -> BearerAuthMiddleware:
    async def whoami(request: Request) -> JSONResponse:
        token: VerifiedToken = request.state.auth
        return JSONResponse({"sub": token.subject, "client_id": token.client_id, "scopes": list(token.scopes)})

    routes = [Route("/mcp", whoami, methods=["GET", "POST"]),
              *protected_resource_routes(RESOURCE, verifier.issuer, scopes_supported=list(required))]
    return BearerAuthMiddleware(Starlette(routes=routes), verifier, required_scopes=required)


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://mcp.example.com")


async def test_middleware_401_without_token_names_metadata_and_scopes(live_as: LiveAS) -> None:
    async with _client(_protected_app(_verifier(live_as))) as client:
        response = await client.post("/mcp")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA_URL}", scope="mcp:tools"'
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "invalid_token", "error_description": "a bearer token is required"}


async def test_middleware_401_with_bad_token_adds_invalid_token(live_as: LiveAS) -> None:
    async with _client(_protected_app(_verifier(live_as))) as client:
        expired = live_as.token(now=int(time.time()) - 1000)
        response = await client.post("/mcp", headers={"Authorization": f"Bearer {expired}"})
        other_scheme = await client.post("/mcp", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", resource_metadata="{METADATA_URL}", scope="mcp:tools"')
    assert response.json() == {"error": "invalid_token", "error_description": "token has expired"}
    assert other_scheme.status_code == 401
    assert "error=" not in other_scheme.headers["www-authenticate"]


async def test_middleware_403_insufficient_scope(live_as: LiveAS) -> None:
    app = _protected_app(_verifier(live_as), required=("mcp:tools", "write:calendar"))
    async with _client(app) as client:
        response = await client.post("/mcp", headers={"Authorization": f"Bearer {live_as.token()}"})
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", scope="mcp:tools write:calendar", resource_metadata="{METADATA_URL}"')
    assert response.json()["error"] == "insufficient_scope"


async def test_middleware_passes_the_verified_token_to_the_app(live_as: LiveAS) -> None:
    async with _client(_protected_app(_verifier(live_as))) as client:
        token = live_as.token(scopes=("mcp:tools", "read:calendar"), subject="bob")
        response = await client.post("/mcp", headers={"Authorization": f"bearer  {token}"})
    assert response.status_code == 200
    assert response.json() == {"sub": "bob", "client_id": "client-1", "scopes": ["mcp:tools", "read:calendar"]}


async def test_middleware_keeps_metadata_and_preflight_public(live_as: LiveAS) -> None:
    async with _client(_protected_app(_verifier(live_as))) as client:
        for path in metadata_paths(RESOURCE):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.json()["authorization_servers"] == [live_as.issuer]
        preflight = await client.options("/.well-known/oauth-protected-resource/mcp", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        # A path merely starting with the well-known prefix is not public.
        assert (await client.get("/.well-known/oauth-protected-resource-evil")).status_code == 401


async def test_middleware_rejects_two_authorization_headers(live_as: LiveAS) -> None:
    token = live_as.token()
    async with _client(_protected_app(_verifier(live_as))) as client:
        response = await client.post("/mcp", headers=[("Authorization", f"Bearer {token}"),
                                                      ("Authorization", f"Bearer {token}")])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_middleware_answers_503_when_the_authorization_server_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verifier = BearerVerifier(issuer=f"http://127.0.0.1:{port}", resource=RESOURCE, timeout=2)
    signer = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode({"sub": "x"}, signer, algorithm="ES256", headers={"typ": "at+jwt", "kid": "k"})
    async with _client(_protected_app(verifier)) as client:
        response = await client.post("/mcp", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "temporarily_unavailable"


# --------------------------------------------------------------------------- RFC 9728 metadata


def test_protected_resource_metadata_document() -> None:
    document = protected_resource_metadata(RESOURCE, "https://auth.example.com",
                                           scopes_supported=["mcp:tools", "read:calendar"], resource_name="Calendar")
    assert document == {
        "resource": RESOURCE,
        "authorization_servers": ["https://auth.example.com"],
        "scopes_supported": ["mcp:tools", "read:calendar"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Calendar",
    }


@pytest.mark.parametrize(("resource", "url", "paths"), [
    ("https://mcp.example.com/mcp", "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
     ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]),
    ("https://mcp.example.com/tenant/mcp/", "https://mcp.example.com/.well-known/oauth-protected-resource/tenant/mcp",
     ["/.well-known/oauth-protected-resource/tenant/mcp", "/.well-known/oauth-protected-resource"]),
    ("https://mcp.example.com", "https://mcp.example.com/.well-known/oauth-protected-resource",
     ["/.well-known/oauth-protected-resource"]),
    ("https://mcp.example.com/", "https://mcp.example.com/.well-known/oauth-protected-resource",
     ["/.well-known/oauth-protected-resource"]),
    ("http://127.0.0.1:8931/mcp", "http://127.0.0.1:8931/.well-known/oauth-protected-resource/mcp",
     ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]),
])
def test_resource_metadata_url_inserts_the_well_known_path(resource: str, url: str, paths: list[str]) -> None:
    assert resource_metadata_url(resource) == url
    assert metadata_paths(resource) == paths


def test_authorization_server_metadata_url_is_path_inserted() -> None:
    assert authorization_server_metadata_url("https://auth.example.com") == (
        "https://auth.example.com/.well-known/oauth-authorization-server")
    assert authorization_server_metadata_url("https://example.com/tenant") == (
        "https://example.com/.well-known/oauth-authorization-server/tenant")


async def test_metadata_routes_serve_both_forms_with_cors() -> None:
    routes = protected_resource_routes(RESOURCE, "https://auth.example.com", scopes_supported=["mcp:tools"],
                                       resource_name="Calendar")
    async with _client(Starlette(routes=routes)) as client:
        inserted = await client.get("/.well-known/oauth-protected-resource/mcp")
        root = await client.get("/.well-known/oauth-protected-resource")
        missing = await client.get("/.well-known/oauth-protected-resource/other")
    for response in (inserted, root):
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"resource": RESOURCE, "authorization_servers": ["https://auth.example.com"],
                                   "scopes_supported": ["mcp:tools"], "bearer_methods_supported": ["header"],
                                   "resource_name": "Calendar"}
    assert missing.status_code == 404


# --------------------------------------------------------------------------- MCP SDK adapter


async def test_sdk_adapter_returns_the_sdk_access_token(live_as: LiveAS) -> None:
    from mcp.server.auth.provider import AccessToken, TokenVerifier

    from authserver.resource.mcp_sdk import McpTokenVerifier

    adapter: TokenVerifier = McpTokenVerifier(_verifier(live_as))
    now = int(time.time())
    token = live_as.token(scopes=("mcp:tools", "read:calendar"), now=now)
    access = await adapter.verify_token(token)
    assert isinstance(access, AccessToken)
    assert access.token == token
    assert access.client_id == "client-1"
    assert access.scopes == ["mcp:tools", "read:calendar"]
    assert access.expires_at == now + 600
    assert access.resource == RESOURCE
    assert access.subject == "alice"
    assert access.claims is not None and access.claims["iss"] == live_as.issuer
    assert await adapter.verify_token(live_as.token(audience="https://other.example.com")) is None
    assert await adapter.verify_token("garbage") is None


def test_core_kit_does_not_import_the_sdk_or_the_server() -> None:
    import subprocess
    import sys

    code = ("import sys, authserver.resource; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'fastapi', 'sqlalchemy', 'pydantic')"
            " or (m.startswith('authserver.') and not m.startswith('authserver.resource'))); print(bad)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _docstring_example(doc: str | None) -> str:
    assert doc
    block = doc.split("::\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


async def test_ten_line_example_in_the_package_docstring_works(live_as: LiveAS) -> None:
    code = _docstring_example(kit.__doc__).replace("https://auth.example.com", live_as.issuer)
    namespace: dict[str, Any] = {}
    exec(compile(code, "authserver/resource/__init__.py:example", "exec"), namespace)
    async with _client(namespace["app"]) as client:
        denied = await client.post("/mcp")
        allowed = await client.post("/mcp", headers={"Authorization": f"Bearer {live_as.token()}"})
        metadata = await client.get("/.well-known/oauth-protected-resource/mcp")
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA_URL}", scope="mcp:tools"'
    assert f'resource_metadata="{METADATA_URL}"' in " ".join((kit.__doc__ or "").split())
    assert allowed.status_code == 200
    assert allowed.json() == {"user": "alice", "scopes": ["mcp:tools"]}
    assert metadata.json()["authorization_servers"] == [live_as.issuer]


async def test_mcp_sdk_example_works_end_to_end(live_as: LiveAS) -> None:
    """The docstring example of ``mcp_sdk``: MCPServer + our verifier, driven over streamable HTTP."""
    from authserver.resource import mcp_sdk

    base = "http://127.0.0.1:8931"
    code = (_docstring_example(mcp_sdk.__doc__).replace("https://auth.example.com", live_as.issuer)
            .replace("https://mcp.example.com", base))
    namespace: dict[str, Any] = {}
    exec(compile(code, "authserver/resource/mcp_sdk.py:example", "exec"), namespace)
    app = namespace["app"]
    good = live_as.token(scopes=("read:calendar",), audience=f"{base}/mcp", subject="carol")
    no_scope = live_as.token(scopes=("mcp:tools",), audience=f"{base}/mcp")
    other_resource = live_as.token(scopes=("read:calendar",), audience=RESOURCE)
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base) as client:
        anonymous = await client.post("/mcp", json=initialize, headers=headers)
        wrong_aud = await client.post("/mcp", json=initialize,
                                      headers={**headers, "Authorization": f"Bearer {other_resource}"})
        lacking = await client.post("/mcp", json=initialize, headers={**headers, "Authorization": f"Bearer {no_scope}"})
        metadata = await client.get("/.well-known/oauth-protected-resource/mcp")
        auth = {**headers, "Authorization": f"Bearer {good}"}
        ok = await client.post("/mcp", json=initialize, headers=auth)
        session = {"mcp-session-id": ok.headers["mcp-session-id"]} if "mcp-session-id" in ok.headers else {}
        await client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                          headers={**auth, **session})
        call = await client.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                               "params": {"name": "whoami", "arguments": {}}},
                                 headers={**auth, **session})
    assert anonymous.status_code == 401
    assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in anonymous.headers[
        "www-authenticate"]
    assert wrong_aud.status_code == 401
    assert lacking.status_code == 403
    assert metadata.json()["authorization_servers"] == [live_as.issuer]
    assert metadata.json()["resource"] == f"{base}/mcp"
    assert ok.status_code == 200, ok.text
    assert call.status_code == 200, call.text
    assert "carol" in call.text


@pytest.mark.parametrize("mode", ["always", "fallback"])
async def test_a_refresh_token_never_passes_for_an_access_token(live_as: LiveAS, mode: str) -> None:
    """Even when the introspection caller may see the refresh token (its own), it is not a bearer credential."""
    import uuid as _uuid

    from authserver.tokens.refresh import RefreshGrant, create

    live_as.register_resources()
    owner = live_as.client("rs:owner", resources=[RESOURCE], can_introspect=True)
    now = utcnow()
    with live_as.db.session() as session:
        refresh_token = create(session, RefreshGrant(
            family_id=_uuid.uuid4(), client_id=owner.client_id, user_id=None, scopes=["mcp:tools"],
            resource=RESOURCE, auth_time=None, family_expires_at=now + timedelta(days=1)),
            now=now, idle_ttl=3600, access_jti="j-refresh", access_expires_at=now + timedelta(minutes=5))
    error = await _rejected(_introspecting(live_as, owner, mode), refresh_token)
    assert error.description == "token is not an access token"
    # And a resource server that does not own it is told nothing at all.
    rs = live_as.client("rs:other", resources=[RESOURCE], can_introspect=True)
    error = await _rejected(_introspecting(live_as, rs, mode), refresh_token)
    assert error.description == "token is not active"
