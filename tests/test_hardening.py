"""Findings of the security review, each attacked: races, malformed input, stale grants, logs."""

from __future__ import annotations

import ipaddress
import logging
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.clients import repository as clients
from authserver.clients.metadata_document import address_allowed
from authserver.clients.models import Client
from authserver.db import Database, utcnow
from authserver.tokens import refresh
from authserver.tokens.models import RefreshToken, RevokedAccessToken
from tests.conftest import ISSUER, make_settings
from tests.oauth_helpers import (
    LOOPBACK_REDIRECT,
    PASSWORD,
    RESOURCE,
    authorize_params,
    count,
    exchange,
    interaction_page,
    pkce_pair,
    query,
    run_flow,
    seed,
    user_id,
)
from tests.test_cimd_flow import documents, publish  # noqa: F401 - fixture

FUTURE = timedelta(minutes=10)


def _family(db: Database, client_id: str) -> uuid.UUID:
    family = uuid.uuid4()
    now = utcnow()
    with db.session() as s:
        for i in range(2):
            s.add(RefreshToken(token_hash=f"{family.hex}{i}", family_id=family, client_id=client_id, scopes=[],
                               resource=RESOURCE, created_at=now, expires_at=now + FUTURE,
                               family_expires_at=now + FUTURE))
    return family


def test_revoking_a_family_catches_a_successor_committed_meanwhile(db: Database) -> None:
    world = seed(db)
    family = _family(db, world.public_id)
    rotating = db.sessions()
    rotating.begin()
    # A rotation in flight: it holds the current member and adds a successor, not yet committed.
    rotating.execute(update(RefreshToken).where(RefreshToken.token_hash == f"{family.hex}1")
                     .values(rotated_at=utcnow()))
    now = utcnow()
    rotating.add(RefreshToken(token_hash=f"{family.hex}2", family_id=family, client_id=world.public_id, scopes=[],
                              resource=RESOURCE, created_at=now, expires_at=now + FUTURE,
                              family_expires_at=now + FUTURE, access_jti="successor-jti",
                              access_expires_at=now + FUTURE))
    rotating.flush()
    done = threading.Event()

    def revoke() -> None:
        with db.session() as s:
            refresh.revoke_family(s, family, utcnow())
        done.set()

    thread = threading.Thread(target=revoke)
    thread.start()
    assert not done.wait(0.5), "revocation should wait for the rotation holding the member"
    rotating.commit()
    rotating.close()
    thread.join(10)
    with db.session() as s:
        live = s.scalars(select(RefreshToken.token_hash).where(RefreshToken.family_id == family,
                                                               RefreshToken.revoked_at.is_(None))).all()
        assert live == []
        assert s.get(RevokedAccessToken, "successor-jti") is not None


def test_denying_the_same_jti_twice_at_once_is_harmless(db: Database) -> None:
    now = utcnow()
    first = db.sessions()
    first.begin()
    refresh.deny_access_token(first, "same-jti", now + FUTURE, now)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with db.session() as s:
                refresh.deny_access_token(s, "same-jti", now + FUTURE, now)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.3)
    first.commit()
    first.close()
    thread.join(10)
    assert errors == []
    assert count(db, "revoked_access_tokens") == 1


@pytest.mark.parametrize("redirect_uri", ["http://[::1", "http://[/cb", "https://app.example.com:notaport/cb"])
def test_malformed_redirect_uri_is_an_error_page_not_a_crash(client: TestClient, db: Database,
                                                             redirect_uri: str) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    response = client.get("/authorize", params=authorize_params(world.public_id, challenge,
                                                                redirect_uri=redirect_uri))
    assert response.status_code == 400 and "location" not in response.headers


def test_nul_bytes_are_refused_everywhere(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    for name in ("client_id", "state", "resource", "scope"):
        params = authorize_params(world.public_id, challenge)
        params[name] = params[name] + "\x00x"
        response = client.get("/authorize", params=params)
        assert response.status_code == 400 and "location" not in response.headers, name
    token = client.post("/token", data={"grant_type": "authorization_code", "client_id": "a\x00b", "code": "x"})
    assert token.status_code == 400 and token.json()["error"] == "invalid_request"
    assert token.headers["cache-control"] == "no-store"
    assert client.get("/register/a%00b", headers={"authorization": "Bearer x"}).status_code == 401
    registered = client.post("/register", json={"redirect_uris": [LOOPBACK_REDIRECT], "client_name": "a\x00b",
                                                "token_endpoint_auth_method": "none"})
    assert registered.json()["error"] == "invalid_client_metadata"


@pytest.mark.parametrize("credentials", ["a%00b:secret", "client:se%00cret", "a\x00b:secret"])
def test_control_characters_in_basic_credentials_are_invalid_client(client: TestClient, credentials: str) -> None:
    import base64

    header = "Basic " + base64.b64encode(credentials.encode()).decode()
    for path in ("/token", "/introspect", "/revoke"):
        response = client.post(path, data={"grant_type": "client_credentials", "token": "x"},
                               headers={"authorization": header})
        assert response.status_code == 401 and response.json()["error"] == "invalid_client", path


def test_nul_byte_username_is_a_failed_sign_in(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    page = interaction_page(client, authorize_params(world.public_id, challenge))
    from tests.oauth_helpers import login

    response = login(client, page.text, username="ali\x00ce")
    assert response.status_code == 401 and "do not match" in response.text


def test_bidi_override_in_a_registered_name_is_refused(client: TestClient) -> None:
    response = client.post("/register", json={"redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method":
                                              "none", "client_name": "Good App\u202eppA liveE"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"


def test_deeply_nested_registration_json_is_refused(client: TestClient) -> None:
    body = b"[" * 30000 + b"]" * 30000
    response = client.post("/register", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"


def test_non_ascii_csrf_is_refused_not_a_crash(client: TestClient, db: Database) -> None:
    client.cookies.set("authserver_session", "x" * 40)
    response = client.post("/logout", data={"csrf": "é"})
    assert response.status_code == 403


def test_too_many_form_fields_is_invalid_request(client: TestClient) -> None:
    response = client.post("/token", data={f"f{i}": "x" for i in range(200)})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"


def _refreshable(client: TestClient, db: Database) -> tuple[str, dict]:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="read:calendar offline_access"))
    return world.public_id, exchange(client, query(location)["code"], verifier, world.public_id).json()


def test_refresh_ends_when_the_client_loses_the_resource(client: TestClient, db: Database) -> None:
    client_id, tokens = _refreshable(client, db)
    with db.session() as s:
        clients.require(s, client_id).resources = []
    response = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                           "client_id": client_id})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    with db.session() as s:
        assert s.scalars(select(RefreshToken.revoked_at)).all() != [None]


def test_passwords_never_reach_the_log(client: TestClient, db: Database, caplog: pytest.LogCaptureFixture) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    page = interaction_page(client, authorize_params(world.public_id, challenge))
    from tests.oauth_helpers import login

    secret = "hunter2-" + "x" * 2000
    with caplog.at_level(logging.DEBUG):
        response = login(client, page.text, password=secret)
        login(client, interaction_page(client, authorize_params(world.public_id, challenge)).text,
              username=PASSWORD)  # a password typed into the username field
    assert response.status_code == 401
    assert "hunter2" not in caplog.text
    from authserver.audit.models import AuditEvent

    with db.session() as s:
        actors = s.scalars(select(AuditEvent.actor).where(AuditEvent.event == "login.failed")).all()
    assert PASSWORD not in actors and actors[0] == user_id(db, "alice")


def test_repeated_sign_in_failures_are_throttled(client: TestClient, db: Database) -> None:
    """The per-address ceiling: past it, even the right password of another username is refused."""
    world = seed(db)
    _, challenge = pkce_pair()
    page = interaction_page(client, authorize_params(world.public_id, challenge))
    from tests.oauth_helpers import login

    services = client.app.state.services
    for _ in range(services.settings.signin_address_failure_limit):
        services.signin_throttle.failed("someone else", "testclient")
    response = login(client, page.text)  # the right password, but from a throttled address
    assert response.status_code == 401 and "Too many failed sign-ins" in response.text


def test_metadata_clients_are_unusable_once_documents_are_disabled(db_url: str, db: Database,
                                                                   documents: dict) -> None:  # noqa: F811
    seed(db)
    client_id = publish(documents, "/agent.json")
    _, challenge = pkce_pair()
    params = authorize_params(client_id, challenge, redirect_uri="http://127.0.0.1:47011/callback")
    app = create_app(make_settings(db_url, cimd_allow_loopback_http=True), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        assert client.get("/authorize", params=params).status_code == 303
    with db.session() as s:
        mirrored = s.get(Client, client_id)
        assert mirrored is not None and mirrored.expires_at is not None  # expires unless consented
    app = create_app(make_settings(db_url, cimd_enabled=False), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        response = client.get("/authorize", params=params)
        assert response.status_code == 400 and "location" not in response.headers


@pytest.mark.parametrize("address", ["fec0::1", "fc00::1", "::ffff:10.0.0.1"])
def test_site_local_and_private_ipv6_are_not_fetched(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))
