"""Refresh rotation and reuse detection, revocation, introspection, client credentials (issue 4)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.clients import repository as clients
from authserver.db import Database, utcnow
from authserver.tokens.models import RefreshToken
from tests.conftest import ISSUER, make_settings
from tests.oauth_helpers import (
    OTHER_RESOURCE,
    RESOURCE,
    World,
    authorize_params,
    exchange,
    pkce_pair,
    query,
    run_flow,
    seed,
)


def tokens_for(client: TestClient, world: World, scope: str = "read:calendar write:calendar offline_access"):
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope=scope))
    response = exchange(client, query(location)["code"], verifier, world.public_id)
    assert response.status_code == 200, response.text
    return response.json()


def confidential_tokens(client: TestClient, world: World,
                        scope: str = "read:calendar write:calendar offline_access") -> dict:
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.confidential_id, challenge, scope=scope))
    response = exchange(client, query(location)["code"], verifier, world.confidential_id,
                        secret=world.confidential_secret)
    assert response.status_code == 200, response.text
    return response.json()


def refresh(client: TestClient, client_id: str, token: str, **extra: str):  # type: ignore[no-untyped-def]
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                       "client_id": client_id, **extra})


def make_introspector(db: Database, resources: list[str]) -> tuple[str, str]:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="Calendar MCP server", grant_types=["client_credentials"], resources=resources,
            can_introspect=True))
        assert created.client_secret
        return created.client.client_id, created.client_secret


def introspect(client: TestClient, creds: tuple[str, str], token: str, **extra: str) -> dict:
    response = client.post("/introspect", data={"token": token, **extra}, auth=creds)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def test_complete_lifecycle(client: TestClient, db: Database) -> None:
    world = seed(db)
    rs = make_introspector(db, [RESOURCE])
    first = tokens_for(client, world)
    assert first["scope"] == "read:calendar write:calendar offline_access"
    current = first
    seen = {first["refresh_token"]}
    for _ in range(3):
        response = refresh(client, world.public_id, current["refresh_token"])
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        current = response.json()
        assert current["refresh_token"] not in seen
        seen.add(current["refresh_token"])
    info = introspect(client, rs, current["access_token"])
    assert info["active"] is True
    assert info["aud"] == RESOURCE
    assert info["client_id"] == world.public_id
    assert info["username"] == "alice"
    assert info["iss"] == ISSUER
    assert info["scope"] == "read:calendar write:calendar"
    assert info["token_type"] == "Bearer"

    response = client.post("/revoke", data={"token": current["refresh_token"], "client_id": world.public_id})
    assert response.status_code == 200
    assert introspect(client, rs, current["refresh_token"]) == {"active": False}
    # The family's access token was deny-listed with it.
    assert introspect(client, rs, current["access_token"]) == {"active": False}
    assert refresh(client, world.public_id, current["refresh_token"]).json()["error"] == "invalid_grant"


def test_reused_refresh_token_revokes_family(db_url: str, db: Database) -> None:
    app = create_app(make_settings(db_url, refresh_reuse_grace=0), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        world = seed(db)
        rs = make_introspector(db, [RESOURCE])
        owner = (world.confidential_id, world.confidential_secret)  # may introspect its own refresh tokens

        def rotate(token: str):  # type: ignore[no-untyped-def]
            return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=owner)

        first = confidential_tokens(client, world)
        second = rotate(first["refresh_token"]).json()
        third = rotate(second["refresh_token"]).json()
        assert introspect(client, owner, third["refresh_token"])["active"] is True
        replay = rotate(first["refresh_token"])
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_grant"
        for member in (first, second, third):
            assert introspect(client, owner, member["refresh_token"]) == {"active": False}
            assert introspect(client, rs, member["access_token"]) == {"active": False}
        assert rotate(third["refresh_token"]).json()["error"] == "invalid_grant"
        with db.session() as s:
            live = s.scalars(select(func.count()).select_from(RefreshToken)
                             .where(RefreshToken.revoked_at.is_(None))).one()
            assert live == 0


def test_refresh_tokens_are_introspectable_only_by_their_own_client(client: TestClient, db: Database) -> None:
    world = seed(db)
    rs = make_introspector(db, [RESOURCE])
    tokens = confidential_tokens(client, world)
    assert introspect(client, (world.confidential_id, world.confidential_secret),
                      tokens["refresh_token"])["token_type"] == "refresh_token"
    # The resource server sees the access token, never the refresh token (it must not pass for one).
    assert introspect(client, rs, tokens["access_token"])["active"] is True
    assert introspect(client, rs, tokens["refresh_token"]) == {"active": False}


def test_race_within_grace_returns_the_same_pair(client: TestClient, db: Database) -> None:
    world = seed(db)
    first = tokens_for(client, world)
    a = refresh(client, world.public_id, first["refresh_token"])
    b = refresh(client, world.public_id, first["refresh_token"])
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    # The successor is live and rotates normally.
    assert refresh(client, world.public_id, a.json()["refresh_token"]).status_code == 200


def test_reuse_after_grace_revokes(client: TestClient, db: Database) -> None:
    world = seed(db)
    first = tokens_for(client, world)
    second = refresh(client, world.public_id, first["refresh_token"]).json()
    with db.session() as s:
        s.execute(update(RefreshToken).where(RefreshToken.rotated_at.is_not(None))
                  .values(rotated_at=utcnow() - timedelta(seconds=11)))
    assert refresh(client, world.public_id, first["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(client, world.public_id, second["refresh_token"]).json()["error"] == "invalid_grant"


def test_refresh_cannot_widen_scope_or_change_resource(client: TestClient, db: Database) -> None:
    world = seed(db)
    first = tokens_for(client, world, scope="read:calendar offline_access")
    wide = refresh(client, world.public_id, first["refresh_token"], scope="read:calendar write:calendar")
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"
    other = refresh(client, world.public_id, first["refresh_token"], resource=OTHER_RESOURCE)
    assert other.status_code == 400 and other.json()["error"] == "invalid_target"
    # Bad requests changed nothing: the token still rotates.
    assert refresh(client, world.public_id, first["refresh_token"]).status_code == 200


def test_refresh_can_narrow_scope(client: TestClient, db: Database) -> None:
    world = seed(db)
    first = tokens_for(client, world)
    narrow = refresh(client, world.public_id, first["refresh_token"], scope="read:calendar")
    assert narrow.status_code == 200
    assert narrow.json()["scope"] == "read:calendar"
    # The grant itself is not narrowed: the next refresh may ask for the original scopes again.
    again = refresh(client, world.public_id, narrow.json()["refresh_token"], scope="read:calendar write:calendar")
    assert again.status_code == 200


def test_refresh_by_another_client_fails_and_changes_nothing(client: TestClient, db: Database) -> None:
    world = seed(db)
    first = tokens_for(client, world)
    stolen = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                         auth=(world.confidential_id, world.confidential_secret))
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert refresh(client, world.public_id, first["refresh_token"]).status_code == 200


def test_revocation_by_another_client_has_no_effect(client: TestClient, db: Database) -> None:
    world = seed(db)
    rs = make_introspector(db, [RESOURCE])
    first = tokens_for(client, world)
    for token in (first["refresh_token"], first["access_token"]):
        response = client.post("/revoke", data={"token": token},
                               auth=(world.confidential_id, world.confidential_secret))
        assert response.status_code == 200
    assert introspect(client, rs, first["access_token"])["active"] is True
    assert refresh(client, world.public_id, first["refresh_token"]).status_code == 200


def test_revoking_an_access_token_deny_lists_it(client: TestClient, db: Database) -> None:
    world = seed(db)
    rs = make_introspector(db, [RESOURCE])
    first = tokens_for(client, world)
    response = client.post("/revoke", data={"token": first["access_token"], "token_type_hint": "access_token",
                                            "client_id": world.public_id})
    assert response.status_code == 200
    assert introspect(client, rs, first["access_token"]) == {"active": False}
    # Only the access token: the refresh token still works.
    assert refresh(client, world.public_id, first["refresh_token"]).status_code == 200


def test_unknown_token_revocation_gets_200(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = client.post("/revoke", data={"token": "nonsense", "client_id": world.public_id})
    assert response.status_code == 200


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_forged_tokens_are_inactive(client: TestClient, db: Database) -> None:
    world = seed(db)
    rs = make_introspector(db, [RESOURCE])
    real = tokens_for(client, world)["access_token"]
    header, payload, signature = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    none_token = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}."
    claims["scope"] = "read:calendar write:calendar admin"
    tampered = f"{header}.{_b64(claims)}.{signature}"
    for token in (none_token, tampered, real[:-4] + "AAAA", "not-a-token"):
        assert introspect(client, rs, token) == {"active": False}


def test_introspection_requires_client_authentication(client: TestClient, db: Database) -> None:
    world = seed(db)
    rs_id, _ = make_introspector(db, [RESOURCE])
    token = tokens_for(client, world)["access_token"]
    assert client.post("/introspect", data={"token": token}).status_code == 401
    wrong = client.post("/introspect", data={"token": token}, auth=(rs_id, "wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    public = client.post("/introspect", data={"token": token, "client_id": world.public_id})
    assert public.status_code == 401


def test_resource_server_cannot_introspect_tokens_for_another_resource(client: TestClient, db: Database) -> None:
    world = seed(db)
    mail_rs = make_introspector(db, [OTHER_RESOURCE])
    token = tokens_for(client, world)
    assert introspect(client, mail_rs, token["access_token"]) == {"active": False}
    assert introspect(client, mail_rs, token["refresh_token"]) == {"active": False}


def test_expired_access_token_is_inactive(db_url: str, db: Database) -> None:
    world = seed(db)
    rs = make_introspector(db, [RESOURCE])
    app = create_app(make_settings(db_url, access_token_ttl=30), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        token = tokens_for(client, world)["access_token"]
    from authserver.tokens.access import issue_access_token
    old = issue_access_token(app.state.services.keys, issuer=ISSUER, subject="x", audience=RESOURCE,
                             client_id=world.public_id, scopes=["read:calendar"], ttl=30,
                             now=int(utcnow().timestamp()) - 100)
    with TestClient(app, base_url=ISSUER) as client:
        assert introspect(client, rs, token)["active"] is True
        assert introspect(client, rs, old.token) == {"active": False}


def test_client_credentials(client: TestClient, db: Database) -> None:
    seed(db)
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="Nightly sync", grant_types=["client_credentials"], scopes=["read:calendar", "write:calendar"],
            resources=[RESOURCE]))
    creds = (created.client.client_id, created.client_secret)
    ok = client.post("/token", data={"grant_type": "client_credentials", "scope": "read:calendar"}, auth=creds)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert "refresh_token" not in body
    assert body["scope"] == "read:calendar"
    rs = make_introspector(db, [RESOURCE])
    info = introspect(client, rs, body["access_token"])
    assert info["sub"] == created.client.client_id and info["aud"] == RESOURCE
    wide = client.post("/token", data={"grant_type": "client_credentials", "scope": "read:email"}, auth=creds)
    assert wide.json()["error"] == "invalid_scope"
    target = client.post("/token", data={"grant_type": "client_credentials", "resource": OTHER_RESOURCE},
                         auth=creds)
    assert target.json()["error"] == "invalid_target"


def test_client_credentials_for_a_public_client_is_unauthorized(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = client.post("/token", data={"grant_type": "client_credentials", "client_id": world.public_id})
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_unsupported_grant_type(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = client.post("/token", data={"grant_type": "password", "client_id": world.public_id,
                                           "username": "alice", "password": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_metadata_lists_lifecycle_endpoints(client: TestClient) -> None:
    body = client.get("/.well-known/oauth-authorization-server").json()
    assert body["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert body["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert set(body["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    assert "none" not in body["introspection_endpoint_auth_methods_supported"]


@pytest.mark.parametrize("grace", [0])
def test_purge_removes_expired_rows(client: TestClient, db: Database, grace: int) -> None:
    from authserver.tokens.purge import purge

    world = seed(db)
    tokens_for(client, world)
    with db.session() as s:
        s.execute(update(RefreshToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    with db.session() as s:
        counts = purge(s, utcnow(), grace)
    assert counts["refresh_tokens"] == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RefreshToken)) == 0
