"""Refresh rotation's hot path (``tokens.refresh.rotate``): one read, one atomic claim, same rules.

The rules themselves are tested through the endpoint in test_token_lifecycle and across processes
in test_concurrent_refresh; here: the claim's single winner under threads on one process, what
the hot path leaves to the general path (a disabled user, a removed resource: the family is
revoked), and its batched audit event.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from authserver.audit.models import AuditEvent
from authserver.clients.models import Client
from authserver.db import Database, utcnow
from authserver.secrets import hash_secret
from authserver.tokens import refresh
from authserver.tokens.models import RefreshToken
from tests.oauth_helpers import RESOURCE, authorize_params, exchange, execute, pkce_pair, query, run_flow, seed

RACERS = 8


def _first_member(db: Database) -> tuple[refresh.RefreshGrant, str]:
    now = utcnow()
    with db.session() as s:
        s.add(Client(client_id="racer", name="racer", grant_types=["refresh_token"]))
        s.flush()
        grant = refresh.RefreshGrant(family_id=uuid.uuid4(), client_id="racer", user_id=None, scopes=["a"],
                                     resource="https://r.example", auth_time=None,
                                     family_expires_at=now + timedelta(days=1))
        token = refresh.create(s, grant, now=now, idle_ttl=3600, access_jti="first", access_expires_at=now)
    return grant, hash_secret(token)


def test_racing_claims_on_one_process_have_exactly_one_winner(db: Database) -> None:
    grant, token_hash = _first_member(db)
    barrier = threading.Barrier(RACERS)
    won: list[bool] = [False] * RACERS
    errors: list[BaseException] = []

    def race(i: int) -> None:
        now = utcnow()
        _, successor = refresh.new_row(grant, now=now, idle_ttl=3600, access_jti=f"jti-{i}", access_expires_at=now)

        def prepare(presented: refresh.Presented) -> refresh.Successor[int] | None:
            assert presented.looks_live("racer", now)
            barrier.wait(timeout=10)  # everyone has read the row as live: now all claim at once
            return refresh.Successor(row=successor, response=f"sealed-{i}".encode(), result=i)

        try:
            won[i] = refresh.rotate(db, token_hash, client_id="racer", now=now, prepare=prepare) == i
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert won.count(True) == 1
    winner = won.index(True)
    with db.session() as s:
        rows = {row.token_hash: row for row in s.scalars(select(RefreshToken))}
    assert len(rows) == 2  # the claimed token and exactly one successor
    claimed = rows.pop(token_hash)
    (successor_row,) = rows.values()
    assert claimed.rotated_at is not None and claimed.revoked_at is None
    # The grace window's response was written with the claim, by the winner.
    assert claimed.successor_response == f"sealed-{winner}".encode()
    assert successor_row.access_jti == f"jti-{winner}" and successor_row.family_id == grant.family_id


def test_a_token_that_is_not_live_is_never_claimed_by_the_hot_path(db: Database) -> None:
    grant, token_hash = _first_member(db)
    now = utcnow()
    _, successor = refresh.new_row(grant, now=now, idle_ttl=3600, access_jti="x", access_expires_at=now)
    execute(db, "UPDATE refresh_tokens SET revoked_at = :t", t=now)
    # prepare declines what does not look live; the claim itself refuses it too.
    assert refresh.rotate(db, token_hash, client_id="racer", now=now,
                          prepare=lambda p: None if not p.looks_live("racer", now) else
                          refresh.Successor(row=successor, response=None, result=1)) is None
    with db.engine.connect() as conn:
        assert not refresh.claim(conn, token_hash, client_id="racer", now=now, successor=successor,
                                 successor_response=None)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RefreshToken)) == 1


def _refreshable(client: TestClient, db: Database) -> tuple[str, dict[str, Any]]:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="read:calendar offline_access"))
    return world.public_id, exchange(client, query(location)["code"], verifier, world.public_id).json()


def _refresh(client: TestClient, client_id: str, token: str):  # type: ignore[no-untyped-def]
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id})


@pytest.mark.parametrize("change", [
    "UPDATE users SET disabled = true WHERE username = 'alice'",
    f"DELETE FROM resources WHERE uri = '{RESOURCE}'",
])
def test_what_ends_the_grant_revokes_the_family(client: TestClient, db: Database, change: str) -> None:
    client_id, tokens = _refreshable(client, db)
    second = _refresh(client, client_id, tokens["refresh_token"])
    assert second.status_code == 200, second.text  # the hot path served it, and cached the client
    execute(db, change)  # written behind the caches' back: the hot path's read sees it anyway
    response = _refresh(client, client_id, second.json()["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RefreshToken).where(RefreshToken.revoked_at.is_(None))) == 0


def test_the_refresh_is_audited_in_the_batch(client: TestClient, db: Database) -> None:
    client_id, tokens = _refreshable(client, db)
    response = _refresh(client, client_id, tokens["refresh_token"])
    assert response.status_code == 200, response.text
    client.app.state.services.audit.flush()  # type: ignore[attr-defined]
    with db.session() as s:
        (event,) = s.scalars(select(AuditEvent).where(AuditEvent.event == "token.refreshed"))
        family = s.scalar(select(RefreshToken.family_id).limit(1))
    assert event.client_id == client_id and event.actor is not None and event.outcome == "success"
    assert event.detail["family"] == str(family) and event.detail["resource"] == RESOURCE
    assert event.detail["scopes"] == ["read:calendar", "offline_access"] and event.detail["jti"]
