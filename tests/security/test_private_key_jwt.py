"""private_key_jwt client authentication (RFC 7523 §2.2): every rule of ``oauth.client_assertion``, each
attacked on both databases. Keys come from inline ``jwks`` or from a ``jwks_uri`` served by a real HTTP
server on 127.0.0.1 (``AUTHSERVER_CIMD_ALLOW_LOOPBACK_HTTP``, the testing switch)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.audit.models import AuditEvent
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.clients.jwks import REFETCH_INTERVAL, JwksFetcher
from authserver.db import Database
from authserver.oauth.client_assertion import JWT_BEARER, MAX_LIFETIME
from tests.conftest import ISSUER, make_settings
from tests.live import json_server
from tests.oauth_helpers import RESOURCE, authorize_params, pkce_pair, query, run_flow, seed

TOKEN_ENDPOINT = f"{ISSUER}/token"


class Key:
    """A client's signing key: the private half stays here, the public JWK is what it registers."""

    def __init__(self, kid: str, alg: str = "ES256") -> None:
        self.kid, self.alg = kid, alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
            public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        self.public = {**public, "kid": kid, "use": "sig"}

    def private_jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.ECAlgorithm if self.alg == "ES256" else jwt.algorithms.RSAAlgorithm
        return {**json.loads(algorithm.to_jwk(self.private)), "kid": self.kid}

    def assertion(self, client_id: str, *, aud: Any = ISSUER, lifetime: int = 60, jti: str | None = None,
                  kid: str | None = "", headers: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + lifetime,
                   "jti": jti or uuid.uuid4().hex, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"kid": self.kid if kid == "" else kid, **(headers or {})}
        header = {k: v for k, v in header.items() if v is not None}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=header)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [k.public for k in keys]}


class JwksServer:
    """Serves a JWK Set (tests change it to rotate keys) and counts fetches."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.hits = 0
        self.url = ""

    def answer(self, path: str) -> dict[str, Any]:
        self.hits += 1
        return self.document


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    with json_server(server.answer) as base:
        server.url = f"{base}/jwks.json"
        yield server


@pytest.fixture
def app(db_url: str, db: Database):  # type: ignore[no-untyped-def]
    return create_app(make_settings(db_url, cimd_allow_loopback_http=True), db=db)


def make_client(db: Database, *, keys: dict[str, Any] | None = None, jwks_uri: str | None = None,
                auth_method: str = "private_key_jwt", signing_alg: str | None = None) -> tuple[str, str | None]:
    with db.session() as s:
        if catalog.get_scopes(s, ["read:calendar"]) == {}:
            catalog.create_scope(s, "read:calendar", "See your calendar events")
            catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar"])
        created = clients.create_client(s, clients.NewClient(
            name="Calendar MCP server", grant_types=["client_credentials"], scopes=["read:calendar"],
            resources=[RESOURCE], can_introspect=True, auth_method=auth_method, jwks=keys, jwks_uri=jwks_uri,
            signing_alg=signing_alg, allow_loopback_http=True))
        return created.client.client_id, created.client_secret


def token(client: TestClient, assertion: str, **extra: str) -> Any:
    return client.post("/token", data={"grant_type": "client_credentials", "scope": "read:calendar",
                                       "client_assertion_type": JWT_BEARER, "client_assertion": assertion, **extra})


def refused(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


def issued(db: Database) -> int:
    with db.session() as s:
        return s.query(AuditEvent).filter(AuditEvent.event == "token.issued").count()


# ---- happy paths --------------------------------------------------------------------------------

def test_client_credentials_with_inline_jwks(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, secret = make_client(db, keys=jwks(key))
    assert secret is None  # a key client never gets a secret
    response = token(client, key.assertion(client_id))
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == client_id and claims["aud"] == RESOURCE


def test_client_credentials_and_introspection_with_jwks_uri(client: TestClient, db: Database,
                                                            jwks_server: JwksServer) -> None:
    key = Key("k1")
    jwks_server.document = jwks(key)
    client_id, _ = make_client(db, jwks_uri=jwks_server.url)
    access = token(client, key.assertion(client_id)).json()["access_token"]
    info = client.post("/introspect", data={"token": access, "client_assertion_type": JWT_BEARER,
                                            "client_assertion": key.assertion(client_id)})
    assert info.status_code == 200, info.text
    assert info.json()["active"] is True and info.json()["client_id"] == client_id
    # Revocation authenticates the same way; afterwards the token is inactive.
    revoked = client.post("/revoke", data={"token": access, "client_assertion_type": JWT_BEARER,
                                           "client_assertion": key.assertion(client_id, aud=TOKEN_ENDPOINT)})
    assert revoked.status_code == 200, revoked.text
    again = client.post("/introspect", data={"token": access, "client_assertion_type": JWT_BEARER,
                                             "client_assertion": key.assertion(client_id)})
    assert again.json() == {"active": False}
    assert jwks_server.hits == 1  # the keys were fetched once and cached


def test_token_endpoint_url_and_one_member_array_are_accepted_audiences(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    for aud in (TOKEN_ENDPOINT, [ISSUER], [TOKEN_ENDPOINT]):
        assert token(client, key.assertion(client_id, aud=aud)).status_code == 200, aud


def test_metadata_advertises_private_key_jwt_and_asymmetric_algorithms_only(client: TestClient) -> None:
    body = client.get("/.well-known/oauth-authorization-server").json()
    for endpoint in ("token", "revocation", "introspection"):
        assert "private_key_jwt" in body[f"{endpoint}_endpoint_auth_methods_supported"]
        algs = body[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert "ES256" in algs and "RS256" in algs
        assert not [a for a in algs if a == "none" or a.startswith("HS")]


# ---- attacks ------------------------------------------------------------------------------------

def test_replayed_jti_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    assertion = key.assertion(client_id)
    assert token(client, assertion).status_code == 200
    refused(token(client, assertion))
    # A fresh assertion reusing the jti is refused too: the jti is what is spent.
    refused(token(client, key.assertion(client_id, jti=jwt.decode(assertion, options={
        "verify_signature": False})["jti"])))


def test_replayed_jti_is_refused_by_another_node(db_url: str, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    other_db = Database(db_url)
    try:
        first = create_app(make_settings(db_url), db=db)
        second = create_app(make_settings(db_url), db=other_db)
        assertion = key.assertion(client_id)
        with TestClient(first, base_url=ISSUER) as one, TestClient(second, base_url=ISSUER) as two:
            assert token(one, assertion).status_code == 200
            refused(token(two, assertion))
    finally:
        other_db.dispose()


def test_wrong_audience_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    for aud in ("https://other-as.example.com", f"{ISSUER}/introspect", f"{ISSUER}/", [ISSUER, "https://evil.example"],
                [], None):
        refused(token(client, key.assertion(client_id, aud=aud)))
    assert issued(db) == 0


def test_expired_assertion_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    now = int(time.time())
    refused(token(client, key.assertion(client_id, iat=now - 200, exp=now - 120)))
    refused(token(client, key.assertion(client_id, exp=None)))  # exp is required


def test_assertion_valid_too_long_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    refused(token(client, key.assertion(client_id, lifetime=MAX_LIFETIME + 60)))
    # Without iat, the bound counts from now.
    refused(token(client, key.assertion(client_id, iat=None, lifetime=3600)))
    # Issued in the future (beyond the skew allowed).
    refused(token(client, key.assertion(client_id, iat=int(time.time()) + 600, lifetime=0, exp=int(time.time()) + 650)))
    assert token(client, key.assertion(client_id, lifetime=MAX_LIFETIME)).status_code == 200


def test_missing_jti_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": ISSUER, "exp": int(time.time()) + 60},
                           key.private, algorithm="ES256", headers={"kid": "k1"})
    refused(token(client, assertion))


def test_unknown_kid_is_refused_and_a_rotation_is_picked_up_by_refetch(app: Any, db: Database,
                                                                        jwks_server: JwksServer) -> None:
    old, new = Key("old"), Key("new")
    jwks_server.document = jwks(old)
    client_id, _ = make_client(db, jwks_uri=jwks_server.url)
    now = [1000.0]
    app.state.services.assertions.fetcher = JwksFetcher(allow_loopback_http=True, clock=lambda: now[0])
    with TestClient(app, base_url=ISSUER) as client:
        assert token(client, old.assertion(client_id)).status_code == 200
        assert jwks_server.hits == 1
        # A key the client never published: one re-fetch, then invalid_client.
        stranger = Key("stranger")
        now[0] += REFETCH_INTERVAL + 1
        refused(token(client, stranger.assertion(client_id)))
        assert jwks_server.hits == 2
        # Spraying unknown kids within the interval fetches nothing more.
        for kid in ("a", "b", "c"):
            refused(token(client, stranger.assertion(client_id, kid=kid)))
        assert jwks_server.hits == 2
        # The client rotates: its new kid is picked up by the next allowed re-fetch.
        jwks_server.document = jwks(new)
        now[0] += REFETCH_INTERVAL + 1
        assert token(client, new.assertion(client_id)).status_code == 200
        assert jwks_server.hits == 3


def test_unknown_kid_with_inline_jwks_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    refused(token(client, key.assertion(client_id, kid="k2")))


def test_alg_none_assertion_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    now = int(time.time())
    unsigned = jwt.encode({"iss": client_id, "sub": client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
                           "jti": uuid.uuid4().hex}, None, algorithm="none", headers={"kid": "k1"})
    refused(token(client, unsigned))
    assert issued(db) == 0


def test_hs256_assertion_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER, "iat": now, "exp": now + 60}
    # Some secret, and the public key's own bytes as the HMAC secret (the classic confusion), signed by
    # hand: PyJWT itself refuses to HMAC with something that looks like a key.
    pem = key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (b"some-shared-secret-of-32-bytes-at-least!", json.dumps(key.public).encode(), pem):
        refused(token(client, hs256({**claims, "jti": uuid.uuid4().hex}, secret)))
    assert issued(db) == 0


def test_algorithm_other_than_registered_is_refused(client: TestClient, db: Database) -> None:
    key = Key("r1", alg="RS256")
    client_id, _ = make_client(db, keys=jwks(key), signing_alg="PS256")
    refused(token(client, key.assertion(client_id)))  # RS256, registered PS256


def test_rs256_key_works(client: TestClient, db: Database) -> None:
    key = Key("r1", alg="RS256")
    client_id, _ = make_client(db, keys=jwks(key), signing_alg="RS256")
    assert token(client, key.assertion(client_id)).status_code == 200


def test_wrong_iss_or_sub_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    other_id, _ = make_client(db, keys=jwks(Key("k1")))
    refused(token(client, key.assertion(client_id, iss=other_id)))
    refused(token(client, key.assertion(client_id, sub=other_id)))
    # Signed by our client's key, claiming to be the other client: its keys do not verify it.
    refused(token(client, key.assertion(other_id)))
    # The client_id form parameter must name the same client.
    refused(token(client, key.assertion(client_id), client_id=other_id))
    assert token(client, key.assertion(client_id), client_id=client_id).status_code == 200


def test_signature_by_another_key_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    refused(token(client, Key("k1").assertion(client_id)))  # same kid, different key


def test_assertion_for_a_client_secret_client_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, secret = make_client(db, auth_method="client_secret_basic")
    assert secret
    refused(token(client, key.assertion(client_id)))
    # And the other way round: a key client cannot use a secret (it has none) or no authentication.
    key_client, _ = make_client(db, keys=jwks(key))
    refused(client.post("/token", data={"grant_type": "client_credentials", "client_id": key_client}))


def test_secret_plus_assertion_at_once_is_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    _, secret = make_client(db, auth_method="client_secret_basic")
    assertion = key.assertion(client_id)
    both = token(client, assertion, client_secret=secret or "")
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    basic = client.post("/token", auth=(client_id, secret or ""), data={
        "grant_type": "client_credentials", "client_assertion_type": JWT_BEARER, "client_assertion": assertion})
    assert basic.status_code == 400 and basic.json()["error"] == "invalid_request"
    # Nothing was spent: the same assertion still works alone.
    assert token(client, assertion).status_code == 200


def test_unsupported_assertion_type_and_half_a_pair_are_refused(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    saml = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    odd = client.post("/token", data={"grant_type": "client_credentials", "client_assertion_type": saml,
                                      "client_assertion": key.assertion(client_id)})
    refused(odd)
    half = client.post("/token", data={"grant_type": "client_credentials",
                                       "client_assertion": key.assertion(client_id)})
    assert half.status_code == 400 and half.json()["error"] == "invalid_request"


def test_access_token_typed_jwt_is_no_assertion(client: TestClient, db: Database) -> None:
    key = Key("k1")
    client_id, _ = make_client(db, keys=jwks(key))
    refused(token(client, key.assertion(client_id, headers={"typ": "at+jwt"})))
    assert token(client, key.assertion(client_id, headers={"typ": "client-authentication+jwt"})).status_code == 200


# ---- registration --------------------------------------------------------------------------------

def test_registration_with_private_key_material_in_jwks_is_refused(client: TestClient) -> None:
    key = Key("k1")
    body = {"redirect_uris": ["https://app.example.com/cb"], "token_endpoint_auth_method": "private_key_jwt"}
    response = client.post("/register", json={**body, "jwks": {"keys": [key.private_jwk()]}})
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"
    assert "private" in response.json()["error_description"]
    symmetric = client.post("/register", json={**body, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}})
    assert symmetric.status_code == 400
    both = client.post("/register", json={**body, "jwks": jwks(key), "jwks_uri": "https://app.example.com/jwks"})
    assert both.status_code == 400
    plain_http = client.post("/register", json={**body, "jwks_uri": "http://app.example.com/jwks"})
    assert plain_http.status_code == 400
    ok = client.post("/register", json={**body, "jwks": jwks(key)})
    assert ok.status_code == 201, ok.text
    assert "client_secret" not in ok.json() and ok.json()["jwks"] == jwks(key)
    assert ok.json()["token_endpoint_auth_method"] == "private_key_jwt"


# ---- Client ID Metadata Documents ---------------------------------------------------------------

@pytest.fixture
def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    served: dict[str, Any] = {}
    with json_server(served.get) as base:
        yield base, served


def test_cimd_document_declaring_private_key_jwt_is_accepted_and_usable(app: Any, db: Database,
                                                                         documents: tuple[str, dict[str, Any]]
                                                                         ) -> None:
    base, served = documents
    key = Key("doc-key")
    client_id = f"{base}/agent.json"
    redirect = "http://127.0.0.1:47012/callback"
    served["/agent.json"] = {"client_id": client_id, "client_name": "Keyed Agent", "redirect_uris": [redirect],
                             "grant_types": ["authorization_code", "refresh_token"],
                             "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks(key)}
    seed(db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        verifier, challenge = pkce_pair()
        params = authorize_params(client_id, challenge, redirect_uri=redirect, scope="read:calendar")
        code = query(run_flow(client, params))["code"]
        exchange = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                    "redirect_uri": redirect, "client_assertion_type": JWT_BEARER}
        # Without its key the document's client cannot redeem the code…
        refused(client.post("/token", data={**exchange, "client_assertion": Key("doc-key").assertion(client_id)}))
        # …with it, it can.
        response = client.post("/token", data={**exchange, "client_assertion": key.assertion(client_id)})
        assert response.status_code == 200, response.text
        refresh = response.json()["refresh_token"]
        # Refresh needs the key too.
        refused(client.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh,
                                            "client_id": client_id}))
        again = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh,
                                            "client_assertion_type": JWT_BEARER,
                                            "client_assertion": key.assertion(client_id)})
        assert again.status_code == 200, again.text
        # Being authenticated now, it may introspect its own token (a public document client may not).
        info = client.post("/introspect", data={"token": again.json()["access_token"],
                                                "client_assertion_type": JWT_BEARER,
                                                "client_assertion": key.assertion(client_id)})
        assert info.status_code == 200, info.text
        assert info.json()["active"] is True and info.json()["client_id"] == client_id


def test_an_assertion_nobody_checked_never_authenticates(db: Database) -> None:
    """Fail closed: an endpoint that forgot ``ClientAssertions.prove`` cannot let an assertion through."""
    from authserver.clients.models import Client
    from authserver.errors import InvalidClient
    from authserver.oauth.client_auth import Credentials, verify

    client_id, _ = make_client(db, keys=jwks(Key("k1")))
    with db.session() as s:
        row = s.get(Client, client_id)
        with pytest.raises(InvalidClient):
            verify(row, Credentials(client_id, None, "private_key_jwt"))
        assert verify(row, Credentials(client_id, None, "private_key_jwt", proven=True)) is row
