"""Fixtures: every storage test runs on SQLite and on PostgreSQL, each on its own fresh database.

PostgreSQL databases are cloned from a migrated template (CREATE DATABASE … TEMPLATE),
SQLite files copied from a migrated file, so a fresh database costs milliseconds.
PostgreSQL tests are skipped when the server is unreachable, unless
AUTHSERVER_TEST_REQUIRE_POSTGRES=1 (as in CI), where that is a failure.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from authserver import migrate
from authserver.app import create_app
from authserver.db import Database
from authserver.settings import Settings

PG_HOST = os.environ.get("AUTHSERVER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AUTHSERVER_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("AUTHSERVER_TEST_PG_USER", "postgres")
REQUIRE_PG = os.environ.get("AUTHSERVER_TEST_REQUIRE_POSTGRES") == "1"
ISSUER = "http://127.0.0.1:8000"
TEST_SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def pg_url(dbname: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True,
                           connect_timeout=3)


def pg_available() -> bool:
    try:
        _pg_admin().close()
        return True
    except psycopg.OperationalError:
        return False


def pg_create(name: str, template: str | None = None) -> None:
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def pg_drop(name: str) -> None:
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def require_pg() -> None:
    """Skip without PostgreSQL, except in CI (AUTHSERVER_TEST_REQUIRE_POSTGRES=1), where it fails."""
    if not pg_available():
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is required (AUTHSERVER_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}")


@contextmanager
def pg_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A uniquely named PostgreSQL database for one test; its URL, dropped afterwards."""
    name = unique_name(prefix)
    pg_create(name, template)
    try:
        yield pg_url(name)
    finally:
        pg_drop(name)


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[str | None]:
    if not pg_available():
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is required (AUTHSERVER_TEST_REQUIRE_POSTGRES=1)")
        yield None
        return
    name = unique_name("authserver_tpl")
    pg_create(name)
    db = Database(pg_url(name))
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()
    yield name
    pg_drop(name)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    db.dispose()  # closing the last connection checkpoints the WAL into the file we copy
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    if backend == "sqlite":
        target = tmp_path / "authserver.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    template = request.getfixturevalue("_pg_template")
    if template is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with pg_database("authserver_test", template) as url:
        yield url


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    require_pg()
    with pg_database("authserver_empty") as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def make_settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {"issuer": ISSUER, "database_url": db_url, "secret_key": TEST_SECRET}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def app(settings: Settings, db: Database):  # type: ignore[no-untyped-def]
    return create_app(settings, db=db)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The ASGI app over httpx (Starlette's TestClient), lifespan included."""
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def loopback_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every outgoing connection attempt and refuse any to a non-loopback address.

    SSRF tests assert the list stays empty: a guard must refuse an address before connecting.
    """
    attempts: list[str] = []
    real = socket.create_connection

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address[0])
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise OSError(f"test refused a connection to non-loopback {address[0]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return attempts
