"""Attacks on the code exchange at the token endpoint (issue 3).

Each failed exchange answers a JSON OAuth error with ``Cache-Control: no-store`` and
issues nothing: no refresh token row, and the code is not marked used (so a failed
guess by an attacker cannot burn the legitimate client's code). A replayed code is the
exception: it revokes everything the first exchange issued.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import jwt
from sqlalchemy import select
from starlette.testclient import TestClient

from authserver.clients import repository as clients
from authserver.db import Database
from authserver.tokens.models import AuthorizationCode
from authserver.users import repository as users
from tests.oauth_helpers import (
    LOOPBACK_REDIRECT,
    OTHER_RESOURCE,
    REDIRECT,
    RESOURCE,
    World,
    authorize_params,
    count,
    exchange,
    execute,
    pkce_pair,
    query,
    run_flow,
    seed,
    sql,
)

# --- helpers -------------------------------------------------------------------------------


def new_code(client: TestClient, world: World, *, client_id: str | None = None,
             **extra: str) -> tuple[str, str]:
    """A fresh code through the real pages (with offline_access, so it also yields a refresh token)."""
    verifier, challenge = pkce_pair()
    extra.setdefault("scope", "read:calendar offline_access")
    location = run_flow(client, authorize_params(client_id or world.public_id, challenge, **extra))
    return query(location)["code"], verifier


def assert_token_error(response, error: str, status: int = 400) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body and "refresh_token" not in body
    return body


def assert_nothing_issued(db: Database) -> None:
    assert count(db, "refresh_tokens") == 0
    assert sql(db, "SELECT used_at, access_jti, family_id FROM authorization_codes") == [(None, None, None)]
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'token.issued'")[0][0] == 0


def jti_of(access_token: str) -> str:
    return jwt.decode(access_token, options={"verify_signature": False})["jti"]


# --- PKCE ----------------------------------------------------------------------------------


def test_wrong_code_verifier_is_invalid_grant_and_issues_nothing(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, _verifier = new_code(client, world)
    wrong, _ = pkce_pair()
    assert_token_error(exchange(client, code, wrong, world.public_id), "invalid_grant")
    assert_nothing_issued(db)


def test_failed_pkce_check_does_not_consume_the_code(client: TestClient, db: Database) -> None:
    """Decision: a wrong verifier does not burn the code.

    Secure because the verifier has >= 256 bits of entropy (43+ chars of a 66-symbol
    alphabet hashed with SHA-256), the code lives 60 s, and every wrong guess yields
    nothing; burning the code instead would let whoever intercepted it deny service to
    the legitimate client. The rightful client still gets its tokens, once.
    """
    world = seed(db)
    code, verifier = new_code(client, world)
    for _ in range(3):
        wrong, _ = pkce_pair()
        assert_token_error(exchange(client, code, wrong, world.public_id), "invalid_grant")
    # A "verifier" that is the challenge itself, or outside the RFC 7636 alphabet, fails too.
    _, challenge = pkce_pair()
    assert_token_error(exchange(client, code, challenge, world.public_id), "invalid_grant")
    assert_token_error(exchange(client, code, verifier + "!", world.public_id), "invalid_grant")
    assert_nothing_issued(db)
    ok = exchange(client, code, verifier, world.public_id)
    assert ok.status_code == 200, ok.text
    assert count(db, "refresh_tokens") == 1
    # ... and once only.
    assert_token_error(exchange(client, code, verifier, world.public_id), "invalid_grant")


def test_missing_code_verifier_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, _ = new_code(client, world)
    response = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": REDIRECT, "client_id": world.public_id})
    body = assert_token_error(response, "invalid_request")
    assert "code_verifier" in body["error_description"]
    assert_nothing_issued(db)


def test_empty_code_verifier_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, _ = new_code(client, world)
    assert_token_error(exchange(client, code, "", world.public_id), "invalid_request")
    assert_nothing_issued(db)


# --- replay --------------------------------------------------------------------------------


def test_reused_code_is_invalid_grant_and_revokes_its_tokens(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    first = exchange(client, code, verifier, world.public_id)
    assert first.status_code == 200, first.text
    tokens = first.json()
    jti = jti_of(tokens["access_token"])
    assert sql(db, "SELECT revoked_at FROM refresh_tokens") == [(None,)]
    assert count(db, "revoked_access_tokens") == 0

    second = exchange(client, code, verifier, world.public_id)
    assert_token_error(second, "invalid_grant")
    assert "access_token" not in second.json()
    # What the code issued is dead: the refresh token's family is revoked, the access token deny-listed.
    revoked = sql(db, "SELECT revoked_at FROM refresh_tokens")
    assert len(revoked) == 1 and revoked[0][0] is not None
    assert sql(db, "SELECT jti FROM revoked_access_tokens") == [(jti,)]
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'code.replayed'")[0][0] == 1
    # No second set of tokens was made.
    assert count(db, "refresh_tokens") == 1
    # The revoked refresh token cannot be used.
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                            "client_id": world.public_id})
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"


def test_reused_code_with_wrong_verifier_still_revokes(client: TestClient, db: Database) -> None:
    """A replay is detected whoever replays it: the attacker needs no verifier to trigger revocation."""
    world = seed(db)
    code, verifier = new_code(client, world)
    first = exchange(client, code, verifier, world.public_id)
    assert first.status_code == 200
    wrong, _ = pkce_pair()
    assert_token_error(exchange(client, code, wrong, world.public_id), "invalid_grant")
    assert sql(db, "SELECT revoked_at IS NOT NULL FROM refresh_tokens") == [(True,)]
    assert sql(db, "SELECT jti FROM revoked_access_tokens") == [(jti_of(first.json()["access_token"]),)]


def test_unknown_code_is_invalid_grant(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    assert_token_error(exchange(client, code[:-2] + "xx", verifier, world.public_id), "invalid_grant")
    assert_token_error(exchange(client, "x" * 5000, verifier, world.public_id), "invalid_grant")
    assert_nothing_issued(db)


# --- binding to the client, redirect URI, expiry and resource -------------------------------


def test_code_used_by_another_client_is_invalid_grant(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)  # issued to the public client
    response = exchange(client, code, verifier, world.confidential_id, secret=world.confidential_secret)
    assert_token_error(response, "invalid_grant")
    assert_nothing_issued(db)
    assert count(db, "revoked_access_tokens") == 0


def test_public_clients_code_presented_by_another_public_client_is_invalid_grant(
        client: TestClient, db: Database) -> None:
    world = seed(db)
    with db.session() as s:
        other = clients.create_client(s, clients.NewClient(
            name="Other Agent", redirect_uris=[REDIRECT], public=True, scopes=["read:calendar"],
            resources=[RESOURCE])).client.client_id
    code, verifier = new_code(client, world)
    assert_token_error(exchange(client, code, verifier, other), "invalid_grant")
    assert_nothing_issued(db)


def test_different_redirect_uri_at_token_is_invalid_grant(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    for other in (LOOPBACK_REDIRECT, REDIRECT + "/", "https://evil.example.com/callback"):
        assert_token_error(exchange(client, code, verifier, world.public_id, redirect_uri=other), "invalid_grant")
    assert_nothing_issued(db)


def test_missing_redirect_uri_at_token_is_invalid_request_when_authorize_had_one(
        client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    response = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                           "code_verifier": verifier, "client_id": world.public_id})
    assert_token_error(response, "invalid_request")
    assert_nothing_issued(db)


def test_omitted_redirect_uri_binds_the_single_registered_one(client: TestClient, db: Database) -> None:
    world = seed(db)  # the confidential client registered exactly one redirect URI
    code, verifier = new_code(client, world, client_id=world.confidential_id, redirect_uri="<omit>")
    other = exchange(client, code, verifier, world.confidential_id, secret=world.confidential_secret,
                     redirect_uri=LOOPBACK_REDIRECT)
    assert_token_error(other, "invalid_grant")
    assert_nothing_issued(db)
    response = client.post("/token", auth=(world.confidential_id, world.confidential_secret), data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier})
    assert response.status_code == 200, response.text


def test_expired_code_is_invalid_grant(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert execute(db, "UPDATE authorization_codes SET expires_at = :past", past=past) == 1
    assert_token_error(exchange(client, code, verifier, world.public_id), "invalid_grant")
    assert_nothing_issued(db)


def test_code_lifetime_is_sixty_seconds(client: TestClient, db: Database) -> None:
    world = seed(db)
    new_code(client, world)
    with db.session() as s:
        row = s.scalar(select(AuthorizationCode))
        assert row is not None
        assert (row.expires_at - row.created_at).total_seconds() == 60
        assert len(row.code_hash) == 64  # only the SHA-256 hash is stored


def test_different_resource_at_token_is_invalid_target(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world, client_id=world.confidential_id)
    response = exchange(client, code, verifier, world.confidential_id, secret=world.confidential_secret,
                        resource=OTHER_RESOURCE)
    assert_token_error(response, "invalid_target")
    assert_nothing_issued(db)
    malformed = exchange(client, code, verifier, world.confidential_id, secret=world.confidential_secret,
                         resource=RESOURCE + "#frag")
    assert_token_error(malformed, "invalid_target")
    assert_nothing_issued(db)
    # The same resource (as approved) works, and the token is bound to it.
    ok = exchange(client, code, verifier, world.confidential_id, secret=world.confidential_secret, resource=RESOURCE)
    assert ok.status_code == 200, ok.text
    assert jwt.decode(ok.json()["access_token"], options={"verify_signature": False})["aud"] == RESOURCE


def test_code_of_disabled_user_is_invalid_grant(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    with db.session() as s:
        users.set_disabled(s, "alice")
    assert_token_error(exchange(client, code, verifier, world.public_id), "invalid_grant")
    assert count(db, "refresh_tokens") == 0
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'token.issued'")[0][0] == 0


# --- client authentication -----------------------------------------------------------------


def test_confidential_client_with_wrong_secret_is_invalid_client(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world, client_id=world.confidential_id)
    response = exchange(client, code, verifier, world.confidential_id, secret="wrong-" + world.confidential_secret)
    assert_token_error(response, "invalid_client", status=401)
    assert response.headers["www-authenticate"].startswith("Basic")
    assert_nothing_issued(db)


def test_confidential_client_without_secret_is_invalid_client(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world, client_id=world.confidential_id)
    assert_token_error(exchange(client, code, verifier, world.confidential_id), "invalid_client", status=401)
    assert_nothing_issued(db)


def test_public_client_sending_client_secret_basic_is_invalid_client(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    response = exchange(client, code, verifier, world.public_id, secret="anything")
    assert_token_error(response, "invalid_client", status=401)
    assert_nothing_issued(db)


def test_public_client_sending_client_secret_post_is_invalid_client(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    response = exchange(client, code, verifier, world.public_id, client_secret="anything")
    assert_token_error(response, "invalid_client", status=401)
    assert_nothing_issued(db)


# --- request shape -------------------------------------------------------------------------


def test_repeated_parameter_in_token_body_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    body = [("grant_type", "authorization_code"), ("code", code), ("code_verifier", verifier),
            ("redirect_uri", REDIRECT), ("client_id", world.public_id), ("code_verifier", verifier)]
    response = client.post("/token", content=urlencode(body),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    response_body = assert_token_error(response, "invalid_request")
    assert "code_verifier" in response_body["error_description"]
    assert_nothing_issued(db)


def test_repeated_code_in_token_body_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    body = urlencode([("grant_type", "authorization_code"), ("code", "bogus"), ("code", code),
                      ("code_verifier", verifier), ("redirect_uri", REDIRECT), ("client_id", world.public_id)])
    response = client.post("/token", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert_token_error(response, "invalid_request")
    assert_nothing_issued(db)


def test_json_token_request_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    response = client.post("/token", json={"grant_type": "authorization_code", "code": code,
                                           "code_verifier": verifier, "redirect_uri": REDIRECT,
                                           "client_id": world.public_id})
    assert_token_error(response, "invalid_request")
    assert_nothing_issued(db)


def test_multipart_token_request_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    response = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                           "code_verifier": verifier, "redirect_uri": REDIRECT,
                                           "client_id": world.public_id},
                           files={"x": ("x.txt", b"x")})
    assert_token_error(response, "invalid_request")
    assert_nothing_issued(db)


def test_missing_grant_type_and_unknown_grant_type_are_errors(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    missing = client.post("/token", data={"code": code, "code_verifier": verifier, "redirect_uri": REDIRECT,
                                          "client_id": world.public_id})
    assert_token_error(missing, "invalid_request")
    implicit = client.post("/token", data={"grant_type": "password", "username": "alice", "password": "x",
                                           "client_id": world.public_id})
    assert_token_error(implicit, "unsupported_grant_type")
    assert_nothing_issued(db)


def test_missing_code_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    response = client.post("/token", data={"grant_type": "authorization_code", "code_verifier": verifier,
                                           "redirect_uri": REDIRECT, "client_id": world.public_id})
    assert_token_error(response, "invalid_request")
    assert_nothing_issued(db)
    assert code


def test_successful_exchange_is_not_cacheable(client: TestClient, db: Database) -> None:
    world = seed(db)
    code, verifier = new_code(client, world)
    response = exchange(client, code, verifier, world.public_id)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert sql(db, "SELECT used_at IS NOT NULL FROM authorization_codes") == [(True,)]
