"""The grants domain: connected apps as stored, and what a disconnect takes back (both databases).

Grants are made through the real authorization pages; the service and the token lookup are
then called directly, with the clock given where the rule depends on it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from authserver.db import Database, utcnow
from authserver.errors import NotFound
from authserver.grants import service as grants
from authserver.interaction import consents
from authserver.tokens import lookup
from tests.oauth_helpers import (
    OTHER_RESOURCE,
    REDIRECT,
    RESOURCE,
    World,
    authorize_params,
    exchange,
    execute,
    pkce_pair,
    query,
    run_flow,
    seed,
    sql,
    user_id,
)


@pytest.fixture
def world(db: Database) -> World:
    return seed(db)


def connect(client: TestClient, world: World, *, username: str = "alice", resource: str = RESOURCE,
            scope: str = "read:calendar write:calendar", untick: tuple[str, ...] = ()) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.confidential_id, challenge, resource=resource, scope=scope),
                        username=username, untick=untick)
    assert location.startswith(REDIRECT), location
    response = exchange(client, query(location)["code"], verifier, world.confidential_id,
                        secret=world.confidential_secret)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def uid(db: Database, username: str) -> uuid.UUID:
    """Looked up before a unit of work opens: a second writer inside one would wait on SQLite."""
    return uuid.UUID(user_id(db, username))


def taken_back(app: FastAPI, db: Database, token: str) -> bool:
    with db.session() as s:
        info = lookup.access_token(s, app.state.services, token)
        assert info is not None  # signed by us and unexpired: the question is only whether it was taken back
        return info.revoked


def iat_of(token: str) -> datetime:
    return datetime.fromtimestamp(jwt.decode(token, options={"verify_signature": False})["iat"], UTC)


def set_cut_off(db: Database, world: World, at: datetime) -> None:
    """Through the ORM: SQLite compares times as text, so they must be stored as the app stores them."""
    alice = uid(db, "alice")
    with db.session() as s:
        consent = consents.find(s, alice, world.confidential_id, RESOURCE)
        assert consent is not None
        consent.tokens_revoked_at = at


def test_connected_apps_describe_each_grant_of_the_person(client: TestClient, db: Database, world: World) -> None:
    connect(client, world)
    connect(client, world, resource=OTHER_RESOURCE, scope="read:email", untick=("offline_access",))
    alice, bob = uid(db, "alice"), uid(db, "bob")
    with db.session() as s:
        apps = {a.resource: a for a in grants.connected_apps(s, alice, utcnow())}
        assert grants.connected_apps(s, bob, utcnow()) == []
    calendar, mail = apps[RESOURCE], apps[OTHER_RESOURCE]
    assert (calendar.client_name, calendar.resource_name) == ("Web Agent", "Calendar")
    # Write scopes first; "stay connected" (offline_access) is no permission and is not listed.
    assert [(v.name, v.write) for v in calendar.scopes] == [("write:calendar", True), ("read:calendar", False)]
    assert calendar.scopes[1].description == "See your calendar events"
    assert calendar.stay_connected and calendar.live_refresh_families == 1
    assert not mail.stay_connected and mail.live_refresh_families == 0
    assert calendar.last_used_at is not None and calendar.granted_at <= calendar.last_used_at


def test_last_use_includes_refreshes_and_orders_the_list(client: TestClient, db: Database, world: World) -> None:
    calendar = connect(client, world)
    connect(client, world, resource=OTHER_RESOURCE, scope="read:email")
    execute(db, "UPDATE consents SET last_used_at = :t", t=utcnow() - timedelta(days=3))
    later = utcnow()
    response = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": calendar["refresh_token"]},
                           auth=(world.confidential_id, world.confidential_secret))
    assert response.status_code == 200, response.text
    alice = uid(db, "alice")
    with db.session() as s:
        apps = grants.connected_apps(s, alice, utcnow())
    assert [a.resource for a in apps] == [RESOURCE, OTHER_RESOURCE]  # most recently used first
    assert apps[0].last_used_at is not None and apps[0].last_used_at >= later - timedelta(seconds=1)
    assert apps[0].live_refresh_families == 1  # rotation continues the family


def test_disconnect_revokes_forgets_and_audits(client: TestClient, app: FastAPI, db: Database,
                                              world: World) -> None:
    tokens = connect(client, world)
    alice = uid(db, "alice")
    with db.session() as s:
        families = grants.disconnect(s, alice, world.confidential_id, RESOURCE, utcnow(), actor=str(alice),
                                     ip="198.51.100.7")
    assert families == 1
    with db.session() as s:
        assert grants.connected_apps(s, alice, utcnow()) == []
        assert consents.granted(s, alice, world.confidential_id, RESOURCE) == []
        assert grants.live_grants_by_client(s, [world.confidential_id], utcnow()) == {}
    assert taken_back(app, db, tokens["access_token"])
    (detail,) = [row[0] for row in sql(db, "SELECT detail FROM audit_events WHERE event = 'grant.disconnected'")]
    assert "write:calendar" in str(detail) and "offline_access" not in str(detail)


def test_disconnect_names_only_the_persons_own_grant(client: TestClient, db: Database, world: World) -> None:
    tokens = connect(client, world)
    bob = uid(db, "bob")
    with db.session() as s, pytest.raises(NotFound):
        grants.disconnect(s, bob, world.confidential_id, RESOURCE, utcnow(), actor="bob", ip=None)
    response = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                           auth=(world.confidential_id, world.confidential_secret))
    assert response.status_code == 200, response.text


def test_one_session_grant_token_is_taken_back_by_its_jti(client: TestClient, app: FastAPI, db: Database,
                                                          world: World) -> None:
    """No refresh family to revoke: the token is found through its code."""
    tokens = connect(client, world, untick=("offline_access",))
    assert "refresh_token" not in tokens
    jti = jwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    alice = uid(db, "alice")
    with db.session() as s:
        assert grants.disconnect(s, alice, world.confidential_id, RESOURCE, utcnow(),
                                 actor="alice", ip=None) == 0
    assert sql(db, "SELECT jti FROM revoked_access_tokens WHERE jti = :j", j=jti) == [(jti,)]
    assert taken_back(app, db, tokens["access_token"])


def test_a_token_from_just_before_the_disconnect_in_the_same_second_is_taken_back(
        client: TestClient, app: FastAPI, db: Database, world: World) -> None:
    tokens = connect(client, world)
    end_of_its_second = iat_of(tokens["access_token"]) + timedelta(milliseconds=999)
    alice = uid(db, "alice")
    with db.session() as s:
        grants.disconnect(s, alice, world.confidential_id, RESOURCE, end_of_its_second,
                          actor="alice", ip=None)
    assert taken_back(app, db, tokens["access_token"])


def test_the_cut_off_spares_a_token_of_its_own_second(client: TestClient, app: FastAPI, db: Database,
                                                      world: World) -> None:
    """A new consent right after a disconnect: its first token shares the disconnect's second."""
    token = connect(client, world)["access_token"]
    issued = iat_of(token)
    set_cut_off(db, world, issued + timedelta(milliseconds=500))  # its jti is not deny-listed: the cut-off alone
    assert not taken_back(app, db, token)
    set_cut_off(db, world, issued + timedelta(seconds=1))  # a cut-off after the token's whole second
    assert taken_back(app, db, token)


def test_a_code_issued_before_a_disconnect_cannot_be_exchanged_after_it(client: TestClient, db: Database,
                                                                        world: World) -> None:
    """The race a disconnect must win: the app got a code, the person disconnects, the code comes in."""
    connect(client, world)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.confidential_id, challenge))  # silent: consented before
    alice = uid(db, "alice")
    with db.session() as s:
        grants.disconnect(s, alice, world.confidential_id, RESOURCE, utcnow(), actor=str(alice), ip=None)
    response = exchange(client, query(location)["code"], verifier, world.confidential_id,
                        secret=world.confidential_secret)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert sql(db, "SELECT COUNT(*) FROM refresh_tokens WHERE revoked_at IS NULL") == [(0,)]


def test_allowed_on_starts_anew_when_an_app_is_allowed_again(client: TestClient, db: Database,
                                                             world: World) -> None:
    connect(client, world)
    alice = uid(db, "alice")
    execute(db, "UPDATE consents SET created_at = :t", t=datetime(2020, 1, 1, tzinfo=UTC))
    with db.session() as s:
        grants.disconnect(s, alice, world.confidential_id, RESOURCE, utcnow(), actor=str(alice), ip=None)
    connect(client, world)
    with db.read_session() as s:
        [app] = grants.connected_apps(s, alice, utcnow())
    assert app.granted_at > utcnow() - timedelta(minutes=1)
