"""/readyz: 200 only when the database answers, is at the code's migration head and has a current signing key."""

from __future__ import annotations

from sqlalchemy import text, update
from starlette.testclient import TestClient

from authserver import migrate
from authserver.db import Database, utcnow
from authserver.keys.models import SigningKey


def test_head_constant_is_alembics_head(db: Database) -> None:
    """``migrate.HEAD`` (what /readyz compares with) cannot drift from the migration scripts."""
    assert migrate.head_revision(db) == migrate.HEAD
    assert migrate.current_revision(db) == migrate.HEAD  # the fixture database is migrated


def test_ready_when_every_check_passes(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready",
                               "checks": {"database": "ok", "migrations": "ok", "signing_key": "ok"}}
    assert response.headers["cache-control"] == "no-store"


def test_not_ready_when_the_schema_is_not_at_head(client: TestClient, db: Database) -> None:
    with db.session() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0008'"))
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == "migrations"
    assert body["checks"]["database"] == "ok"
    assert "0008" in body["checks"]["migrations"] and migrate.HEAD in body["checks"]["migrations"]
    assert body["checks"]["signing_key"] == "skipped"
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_not_ready_without_a_version_table(client: TestClient, db: Database) -> None:
    with db.session() as session:
        session.execute(text("DROP TABLE alembic_version"))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == "migrations"


def test_not_ready_when_every_key_is_retired(client: TestClient, db: Database) -> None:
    assert client.get("/readyz").status_code == 200
    with db.session() as session:
        session.execute(update(SigningKey).values(retired_at=utcnow()))
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == "signing_key"
    assert body["checks"]["migrations"] == "ok"


def test_not_ready_when_the_database_is_away(client: TestClient, db: Database, monkeypatch) -> None:
    def away() -> None:
        raise ConnectionRefusedError("database is away")

    monkeypatch.setattr(db, "read_session", away)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == "database"
    assert body["checks"] == {"database": "failed (ConnectionRefusedError)", "migrations": "skipped",
                              "signing_key": "skipped"}
