"""DPoP at the token endpoint (RFC 9449 §4.3, §5, §8, §10), attacked: one test per attack, both databases.

Every test drives the real app through Starlette's TestClient on a fresh SQLite or PostgreSQL
database; proofs are made by ``dpop_helpers`` with real keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.resource.dpop import StatelessNonces
from authserver.settings import ConfigError, load_settings
from tests.conftest import ISSUER, TEST_SECRET, make_settings
from tests.oauth_helpers import RESOURCE, World, authorize_params, pkce_pair, query, run_flow, seed, sql
from tests.security.dpop_helpers import TOKEN_URL, DPoPKey, hmac_proof, tampered, unsigned_proof


@pytest.fixture
def world(db: Database) -> World:
    return seed(db)


def machine_client(db: Database, *, dpop_bound: bool = False, can_introspect: bool = False) -> tuple[str, str]:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="Machine", grant_types=["client_credentials"], scopes=["read:calendar"], resources=[RESOURCE],
            dpop_bound_access_tokens=dpop_bound, can_introspect=can_introspect))
        assert created.client_secret
        return created.client.client_id, created.client_secret


@pytest.fixture
def machine(db: Database, world: World) -> tuple[str, str]:
    return machine_client(db)


def client_credentials(client: TestClient, creds: tuple[str, str], proof: str | None = None,
                       headers: list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    sent = list(headers or [])
    if proof is not None:
        sent.append(("DPoP", proof))
    return client.post("/token", data={"grant_type": "client_credentials", "resource": RESOURCE}, auth=creds,
                       headers=sent)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def refused(response: Any, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text
    assert response.headers["cache-control"] == "no-store"


def code_flow(client: TestClient, world: World, key: DPoPKey | None, *, dpop_jkt: str | None = None,
              client_id: str | None = None, secret: str | None = None):  # type: ignore[no-untyped-def]
    """authorize → sign-in → consent → token, the token request carrying ``key``'s proof."""
    verifier, challenge = pkce_pair()
    extra = {"dpop_jkt": dpop_jkt} if dpop_jkt else {}
    location = run_flow(client, authorize_params(client_id or world.public_id, challenge, **extra))
    code = query(location)["code"]
    return redeem(client, code, verifier, key, client_id=client_id or world.public_id, secret=secret)


def redeem(client: TestClient, code: str, verifier: str, key: DPoPKey | None, *, client_id: str,
           secret: str | None = None):  # type: ignore[no-untyped-def]
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": "https://app.example.com/callback"}
    if secret is None:
        data["client_id"] = client_id
    headers = {"DPoP": key.proof()} if key else {}
    return client.post("/token", data=data, headers=headers, auth=(client_id, secret) if secret else None)


def refresh(client: TestClient, token: str, client_id: str, key: DPoPKey | None, *,
            secret: str | None = None):  # type: ignore[no-untyped-def]
    data = {"grant_type": "refresh_token", "refresh_token": token}
    if secret is None:
        data["client_id"] = client_id
    headers = {"DPoP": key.proof()} if key else {}
    return client.post("/token", data=data, headers=headers, auth=(client_id, secret) if secret else None)


# ---- happy paths ----------------------------------------------------------------------------------


def test_metadata_advertises_dpop_signing_algs(client: TestClient) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    algs = metadata["dpop_signing_alg_values_supported"]
    assert "ES256" in algs and "none" not in algs and not any(a.startswith("HS") for a in algs)


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "EdDSA"])
def test_client_credentials_with_proof_gets_a_dpop_bound_token(client: TestClient, machine: tuple[str, str],
                                                              alg: str) -> None:
    key = DPoPKey(alg)
    response = client_credentials(client, machine, key.proof())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    assert response.headers["cache-control"] == "no-store"
    assert "dpop-nonce" not in response.headers  # nonces are not required by default


def test_request_without_dpop_header_still_gets_a_bearer_token(client: TestClient, machine: tuple[str, str]) -> None:
    body = client_credentials(client, machine).json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in claims_of(body["access_token"])


def test_code_flow_binds_public_clients_tokens_and_the_binding_survives_rotation(
        client: TestClient, db: Database, world: World) -> None:
    key = DPoPKey()
    response = code_flow(client, world, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    assert sql(db, "SELECT DISTINCT dpop_jkt FROM refresh_tokens") == [(key.jkt,)]
    token = body["refresh_token"]
    for _ in range(2):  # rotation: each successor is bound to the same key
        response = refresh(client, token, world.public_id, key)
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]
        assert response.json()["token_type"] == "DPoP"
        assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": key.jkt}
    assert sql(db, "SELECT COUNT(*), COUNT(dpop_jkt) FROM refresh_tokens") == [(3, 3)]


def test_confidential_clients_refresh_token_is_not_bound_but_its_access_tokens_are(
        client: TestClient, db: Database, world: World) -> None:
    key = DPoPKey()
    body = code_flow(client, world, key, client_id=world.confidential_id, secret=world.confidential_secret).json()
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    assert sql(db, "SELECT dpop_jkt FROM refresh_tokens") == [(None,)]
    # RFC 9449 §5: it authenticates anyway, so its refresh token works without a proof…
    plain = refresh(client, body["refresh_token"], world.confidential_id, None, secret=world.confidential_secret)
    assert plain.status_code == 200, plain.text
    assert plain.json()["token_type"] == "Bearer"
    # …and its access tokens are bound whenever it sends one.
    bound = refresh(client, plain.json()["refresh_token"], world.confidential_id, DPoPKey(),
                    secret=world.confidential_secret)
    assert bound.json()["token_type"] == "DPoP"


def test_dpop_jkt_code_redeemed_with_its_key_works(client: TestClient, world: World) -> None:
    key = DPoPKey()
    response = code_flow(client, world, key, dpop_jkt=key.jkt)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": key.jkt}


# ---- proofs that must be refused ------------------------------------------------------------------


def test_replayed_proof_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    proof = DPoPKey().proof()
    assert client_credentials(client, machine, proof).status_code == 200
    refused(client_credentials(client, machine, proof), "invalid_dpop_proof")


def test_replayed_proof_is_refused_by_another_app_on_the_same_database(
        client: TestClient, db_url: str, machine: tuple[str, str]) -> None:
    proof = DPoPKey().proof()
    assert client_credentials(client, machine, proof).status_code == 200
    other_db = Database(db_url)
    try:
        with TestClient(create_app(make_settings(db_url), db=other_db), base_url=ISSUER) as other_node:
            refused(client_credentials(other_node, machine, proof), "invalid_dpop_proof")
    finally:
        other_db.dispose()


@pytest.mark.parametrize("htu", ["http://127.0.0.1:8000/introspect", "https://127.0.0.1:8000/token",
                                 "http://evil.example.com/token", "http://127.0.0.1:8001/token", "/token"])
def test_proof_for_another_htu_is_refused(client: TestClient, machine: tuple[str, str], htu: str) -> None:
    refused(client_credentials(client, machine, DPoPKey().proof(htu=htu)), "invalid_dpop_proof")


def test_htu_is_compared_without_query_and_after_normalisation(client: TestClient, machine: tuple[str, str]) -> None:
    """§4.3: query and fragment are ignored; scheme and host case and the default port are not differences."""
    for htu in ("http://127.0.0.1:8000/token?x=1#f", "HTTP://127.0.0.1:8000/token"):
        assert client_credentials(client, machine, DPoPKey().proof(htu=htu)).status_code == 200, htu


@pytest.mark.parametrize("htm", ["GET", "post", "PUT"])
def test_proof_with_wrong_htm_is_refused(client: TestClient, machine: tuple[str, str], htm: str) -> None:
    refused(client_credentials(client, machine, DPoPKey().proof(htm=htm)), "invalid_dpop_proof")


def test_stale_iat_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    refused(client_credentials(client, machine, DPoPKey().proof(iat=int(time.time()) - 120)), "invalid_dpop_proof")


def test_future_iat_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    refused(client_credentials(client, machine, DPoPKey().proof(iat=int(time.time()) + 60)), "invalid_dpop_proof")


def test_alg_none_proof_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    refused(client_credentials(client, machine, unsigned_proof(DPoPKey())), "invalid_dpop_proof")


def test_hs256_proof_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    refused(client_credentials(client, machine, hmac_proof(DPoPKey())), "invalid_dpop_proof")


def test_proof_with_private_key_in_jwk_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    key = DPoPKey()
    refused(client_credentials(client, machine, key.proof(jwk=key.private_jwk)), "invalid_dpop_proof")


def test_proof_with_bad_signature_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    refused(client_credentials(client, machine, tampered(DPoPKey().proof())), "invalid_dpop_proof")


def test_proof_signed_by_a_key_other_than_its_jwk_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    refused(client_credentials(client, machine, DPoPKey().proof(jwk=DPoPKey().jwk)), "invalid_dpop_proof")


def test_jwk_of_the_wrong_type_for_alg_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    rsa_key = DPoPKey("RS256")
    refused(client_credentials(client, machine, rsa_key.proof(jwk=DPoPKey().jwk)), "invalid_dpop_proof")


def test_two_dpop_headers_are_refused(client: TestClient, machine: tuple[str, str]) -> None:
    key = DPoPKey()
    refused(client_credentials(client, machine, headers=[("DPoP", key.proof()), ("DPoP", key.proof())]),
            "invalid_dpop_proof")


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "dpop"])
def test_proof_with_wrong_typ_is_refused(client: TestClient, machine: tuple[str, str], typ: str) -> None:
    refused(client_credentials(client, machine, DPoPKey().proof(typ=typ)), "invalid_dpop_proof")


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_proof_missing_a_required_claim_is_refused(client: TestClient, machine: tuple[str, str], claim: str) -> None:
    refused(client_credentials(client, machine, DPoPKey().proof(omit=(claim,))), "invalid_dpop_proof")


def test_proof_with_an_overlong_jti_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    refused(client_credentials(client, machine, DPoPKey().proof(jti="j" * 257)), "invalid_dpop_proof")


@pytest.mark.parametrize("junk", ["x", "a.b.c", "e30.e30.e30", "a" * 9000, "Bearer x.y.z"])
def test_garbage_in_the_dpop_header_is_refused(client: TestClient, machine: tuple[str, str], junk: str) -> None:
    refused(client_credentials(client, machine, junk), "invalid_dpop_proof")


def test_non_ascii_dpop_header_is_refused(client: TestClient, machine: tuple[str, str]) -> None:
    response = client.post("/token", data={"grant_type": "client_credentials", "resource": RESOURCE}, auth=machine,
                           headers={"DPoP": "é.é.é".encode()})
    refused(response, "invalid_dpop_proof")


# ---- nonces ---------------------------------------------------------------------------------------


@pytest.fixture
def nonce_client(db_url: str, db: Database, world: World) -> Iterator[TestClient]:
    app = create_app(make_settings(db_url, dpop_nonce_required=True), db=db)
    with TestClient(app, base_url=ISSUER) as test_client:
        yield test_client


def test_missing_nonce_gets_use_dpop_nonce_then_succeeds_with_it(nonce_client: TestClient, db: Database) -> None:
    machine = machine_client(db)
    key = DPoPKey()
    first = client_credentials(nonce_client, machine, key.proof())
    refused(first, "use_dpop_nonce")
    nonce = first.headers["dpop-nonce"]
    assert "DPoP-Nonce" in first.headers["access-control-expose-headers"]
    second = client_credentials(nonce_client, machine, key.proof(nonce=nonce))
    assert second.status_code == 200, second.text
    assert second.json()["token_type"] == "DPoP"
    assert second.headers["dpop-nonce"] == nonce  # the nonce to use next (§8.2)


def test_stale_nonce_gets_use_dpop_nonce_with_a_fresh_one(nonce_client: TestClient, db: Database) -> None:
    machine = machine_client(db)
    period = 300
    old = StatelessNonces(TEST_SECRET.encode(), period, clock=lambda: time.time() - 2 * period).current()
    response = client_credentials(nonce_client, machine, DPoPKey().proof(nonce=old))
    refused(response, "use_dpop_nonce")
    assert response.headers["dpop-nonce"] != old


def test_forged_nonce_is_refused(nonce_client: TestClient, db: Database) -> None:
    machine = machine_client(db)
    forged = StatelessNonces(b"another server's secret", 300).current()
    refused(client_credentials(nonce_client, machine, DPoPKey().proof(nonce=forged)), "use_dpop_nonce")


def test_nonce_from_another_node_with_the_same_secret_is_accepted(
        nonce_client: TestClient, db_url: str, db: Database) -> None:
    machine = machine_client(db)
    nonce = client_credentials(nonce_client, machine, DPoPKey().proof()).headers["dpop-nonce"]
    other_db = Database(db_url)
    try:
        app = create_app(make_settings(db_url, dpop_nonce_required=True), db=other_db)
        with TestClient(app, base_url=ISSUER) as other_node:
            assert client_credentials(other_node, machine, DPoPKey().proof(nonce=nonce)).status_code == 200
    finally:
        other_db.dispose()


# ---- bindings that must hold ----------------------------------------------------------------------


def test_bound_refresh_token_refreshed_with_another_key_is_refused(client: TestClient, world: World) -> None:
    key = DPoPKey()
    token = code_flow(client, world, key).json()["refresh_token"]
    refused(refresh(client, token, world.public_id, DPoPKey()), "invalid_grant")
    # Nothing was spent or revoked: the holder of the key still refreshes.
    assert refresh(client, token, world.public_id, key).status_code == 200


def test_bound_refresh_token_refreshed_without_a_proof_is_refused(client: TestClient, world: World) -> None:
    key = DPoPKey()
    token = code_flow(client, world, key).json()["refresh_token"]
    refused(refresh(client, token, world.public_id, None), "invalid_grant")
    assert refresh(client, token, world.public_id, key).status_code == 200


def test_bound_refresh_token_replayed_in_the_grace_window_with_another_key_is_refused(
        client: TestClient, world: World) -> None:
    """The benign-race answer (the same successor again) is only for the key holder."""
    key = DPoPKey()
    token = code_flow(client, world, key).json()["refresh_token"]
    assert refresh(client, token, world.public_id, key).status_code == 200
    refused(refresh(client, token, world.public_id, DPoPKey()), "invalid_grant")
    assert refresh(client, token, world.public_id, key).status_code == 200  # the race answer, for the holder


def test_dpop_jkt_code_redeemed_with_another_key_is_refused(client: TestClient, world: World) -> None:
    key = DPoPKey()
    verifier, challenge = pkce_pair()
    code = query(run_flow(client, authorize_params(world.public_id, challenge, dpop_jkt=key.jkt)))["code"]
    refused(redeem(client, code, verifier, DPoPKey(), client_id=world.public_id), "invalid_grant")
    refused(redeem(client, code, verifier, None, client_id=world.public_id), "invalid_grant")
    # The code was not spent by the attempts without the key.
    response = redeem(client, code, verifier, key, client_id=world.public_id)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_malformed_dpop_jkt_is_refused_at_authorize(client: TestClient, world: World) -> None:
    _, challenge = pkce_pair()
    response = client.get("/authorize", params=authorize_params(world.public_id, challenge, dpop_jkt="short"))
    assert response.status_code == 303
    assert query(response.headers["location"])["error"] == "invalid_request"


def test_dpop_bound_client_without_a_proof_is_refused(client: TestClient, db: Database, world: World) -> None:
    machine = machine_client(db, dpop_bound=True)
    refused(client_credentials(client, machine), "invalid_request")
    assert client_credentials(client, machine, DPoPKey().proof()).json()["token_type"] == "DPoP"


def test_dpop_bound_public_client_without_a_proof_is_refused_at_code_exchange(
        client: TestClient, db: Database, world: World) -> None:
    with db.session() as s:
        clients.set_dpop_bound(s, world.public_id, True)
    refused(code_flow(client, world, None), "invalid_request")


def test_registered_dpop_bound_access_tokens_is_kept_and_enforced(client: TestClient, db: Database,
                                                                  world: World) -> None:
    registered = client.post("/register", json={
        "redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "dpop_bound_access_tokens": True})
    assert registered.status_code == 201, registered.text
    assert registered.json()["dpop_bound_access_tokens"] is True
    client_id = registered.json()["client_id"]
    assert sql(db, "SELECT dpop_bound_access_tokens FROM clients WHERE client_id = :c", c=client_id) == [(True,)]
    response = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x" * 43,
                                           "client_id": client_id})
    refused(response, "invalid_request")


def test_registration_refuses_a_non_boolean_dpop_bound_access_tokens(client: TestClient, world: World) -> None:
    response = client.post("/register", json={"redirect_uris": ["http://127.0.0.1/callback"],
                                              "token_endpoint_auth_method": "none", "dpop_bound_access_tokens": "yes"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


def test_public_client_without_proof_is_refused_when_the_server_requires_dpop(db_url: str, db: Database,
                                                                              world: World) -> None:
    app = create_app(make_settings(db_url, dpop_required_for_public_clients=True), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as strict:
        refused(code_flow(strict, world, None), "invalid_request")
        assert code_flow(strict, world, DPoPKey()).status_code == 200


# ---- introspection and revocation -----------------------------------------------------------------


def test_introspection_shows_cnf_and_dpop_token_type(client: TestClient, db: Database, world: World) -> None:
    machine = machine_client(db)
    rs = machine_client(db, can_introspect=True)
    key = DPoPKey()
    token = client_credentials(client, machine, key.proof()).json()["access_token"]
    body = client.post("/introspect", data={"token": token}, auth=rs).json()
    assert body["active"] is True
    assert body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": key.jkt}
    bearer = client_credentials(client, machine).json()["access_token"]
    plain = client.post("/introspect", data={"token": bearer}, auth=rs).json()
    assert plain["token_type"] == "Bearer" and "cnf" not in plain


def test_revoked_dpop_bound_token_is_inactive(client: TestClient, db: Database, world: World) -> None:
    machine = machine_client(db)
    rs = machine_client(db, can_introspect=True)
    token = client_credentials(client, machine, DPoPKey().proof()).json()["access_token"]
    assert client.post("/revoke", data={"token": token}, auth=machine).status_code == 200
    assert client.post("/introspect", data={"token": token}, auth=rs).json() == {"active": False}


def test_cors_preflight_allows_the_dpop_header(client: TestClient) -> None:
    response = client.options("/token", headers={"Origin": "https://app.example", "Access-Control-Request-Method":
                                                 "POST", "Access-Control-Request-Headers": "dpop"})
    assert "dpop" in response.headers["access-control-allow-headers"]
    assert TOKEN_URL.endswith("/token")


@pytest.mark.parametrize(("variable", "value"), [("AUTHSERVER_DPOP_PROOF_MAX_AGE", "3600"),
                                                 ("AUTHSERVER_DPOP_PROOF_MAX_AGE", "1"),
                                                 ("AUTHSERVER_DPOP_CLOCK_SKEW", "600"),
                                                 ("AUTHSERVER_DPOP_NONCE_SECONDS", "5")])
def test_unsafe_dpop_windows_are_a_config_error(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


# ---- a thief without the key cannot sign the person out with a used code --------------------------


def test_replayed_dpop_jkt_code_without_the_key_revokes_nothing(client: TestClient, world: World) -> None:
    """A used code bound with ``dpop_jkt`` leaks (history, a Referer, a log): replayed without a proof of
    the key it proves no theft (the thief could never have redeemed it), so it must not revoke the
    tokens the key holder got with it."""
    key = DPoPKey()
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, dpop_jkt=key.jkt))
    code = query(location)["code"]
    tokens = redeem(client, code, verifier, key, client_id=world.public_id).json()
    thief_verifier, _ = pkce_pair()  # the thief has the code only
    for thief_key in (None, DPoPKey()):
        refused(redeem(client, code, thief_verifier, thief_key, client_id=world.public_id), "invalid_grant")
    # The key holder's refresh token still works.
    assert refresh(client, tokens["refresh_token"], world.public_id, key).status_code == 200


def test_replayed_dpop_jkt_code_with_the_key_still_revokes(client: TestClient, world: World) -> None:
    """RFC 6749 §4.1.2 still holds for whoever proves the key: the code used twice revokes what it issued."""
    key = DPoPKey()
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, dpop_jkt=key.jkt))
    code = query(location)["code"]
    tokens = redeem(client, code, verifier, key, client_id=world.public_id).json()
    refused(redeem(client, code, verifier, key, client_id=world.public_id), "invalid_grant")
    refused(refresh(client, tokens["refresh_token"], world.public_id, key), "invalid_grant")


def test_a_dpop_clients_revocation_without_a_proof_is_honoured(client: TestClient, world: World) -> None:
    """RFC 9449 defines no proof at /revoke and clients send none at sign-out: their revocation must
    work (a refusal would leave the token alive). A thief with a copy can therefore end the family,
    which only signs the person out: the token itself stays useless to the thief."""
    key = DPoPKey()
    token = code_flow(client, world, key).json()["refresh_token"]
    response = client.post("/revoke", data={"token": token, "client_id": world.public_id,
                                            "token_type_hint": "refresh_token"})
    assert response.status_code == 200, response.text
    refused(refresh(client, token, world.public_id, key), "invalid_grant")
