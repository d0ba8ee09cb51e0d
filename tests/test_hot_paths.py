"""The hot lane and its caches: what they may keep, for how long, and what must never be lost.

Two apps on one database are two nodes: each has its own ``Database`` (so its own commit
hooks) and its own caches. A change on one node applies there at once and on the other
within ``AUTHSERVER_CACHE_SECONDS``; the tests sleep past that bound, they never time work.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.audit.buffer import AuditBuffer
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.readcache import MISSING, ReadCache
from tests.conftest import ISSUER, TEST_SECRET, make_settings
from tests.live import wait_healthy
from tests.oauth_helpers import RESOURCE, seed, sql

CACHE_SECONDS = 2.0


def _machine_clients(db: Database) -> tuple[tuple[str, str], tuple[str, str]]:
    """A client_credentials client and a resource server's introspecting client."""
    with db.session() as s:
        machine = clients.create_client(s, clients.NewClient(
            name="Nightly sync", grant_types=["client_credentials"], scopes=["read:calendar"], resources=[RESOURCE]))
        rs = clients.create_client(s, clients.NewClient(
            name="Calendar MCP server", grant_types=["client_credentials"], resources=[RESOURCE], can_introspect=True))
    assert machine.client_secret and rs.client_secret
    return (machine.client.client_id, machine.client_secret), (rs.client.client_id, rs.client_secret)


@pytest.fixture
def nodes(db_url: str, db: Database) -> Iterator[tuple[TestClient, TestClient]]:
    """Two nodes (apps with their own Database and caches) on one database, seeded."""
    seed(db)
    other = Database(db_url)
    settings = make_settings(db_url, cache_seconds=CACHE_SECONDS)
    with TestClient(create_app(settings, db=db), base_url=ISSUER) as a, \
            TestClient(create_app(settings, db=other), base_url=ISSUER) as b:
        yield a, b
    other.dispose()


def _token(node: TestClient, creds: tuple[str, str]) -> str:
    response = node.post("/token", data={"grant_type": "client_credentials", "scope": "read:calendar"}, auth=creds)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _active(node: TestClient, rs: tuple[str, str], token: str) -> bool:
    response = node.post("/introspect", data={"token": token}, auth=rs)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    return bool(response.json()["active"])


def test_a_revocation_applies_at_once_here_and_within_the_cache_period_on_every_node(
        db: Database, nodes: tuple[TestClient, TestClient]) -> None:
    a, b = nodes
    machine, rs = _machine_clients(db)
    token = _token(a, machine)
    assert _active(a, rs, token) and _active(b, rs, token)  # both nodes now hold a verdict

    assert a.post("/revoke", data={"token": token}, auth=machine).status_code == 200
    assert not _active(a, rs, token)  # the node that revoked cleared its caches on commit
    # The other node may still use its verdict, but never for longer than the cache period.
    time.sleep(CACHE_SECONDS + 0.1)
    assert not _active(b, rs, token)


def test_a_disabled_client_stops_on_every_node_within_the_cache_period(
        db: Database, db_url: str, nodes: tuple[TestClient, TestClient]) -> None:
    a, b = nodes
    machine, rs = _machine_clients(db)
    token = _token(b, machine)
    assert _active(b, rs, token)
    with db.session() as s:  # node a's Database: like the console on node a
        clients.require(s, machine[0]).disabled = True

    refused = a.post("/token", data={"grant_type": "client_credentials"}, auth=machine)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert not _active(a, rs, token)
    time.sleep(CACHE_SECONDS + 0.1)
    refused = b.post("/token", data={"grant_type": "client_credentials"}, auth=machine)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert not _active(b, rs, token)


def test_a_rotated_secret_stops_on_every_node_within_the_cache_period(
        db: Database, nodes: tuple[TestClient, TestClient]) -> None:
    a, b = nodes
    machine, _ = _machine_clients(db)
    _token(b, machine)  # node b caches the client
    with db.session() as s:
        new_secret = clients.rotate_secret(s, machine[0])
    assert a.post("/token", data={"grant_type": "client_credentials"}, auth=machine).status_code == 401
    assert _token(a, (machine[0], new_secret))
    time.sleep(CACHE_SECONDS + 0.1)
    assert b.post("/token", data={"grant_type": "client_credentials"}, auth=machine).status_code == 401
    assert _token(b, (machine[0], new_secret))


def test_client_credentials_issuance_writes_only_its_batched_audit_event(db: Database, client: TestClient) -> None:
    seed(db)
    machine, _ = _machine_clients(db)
    statements: list[str] = []

    from sqlalchemy import event

    def note(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            statements.append(statement)

    _token(client, machine)  # the first request reads the client and resource
    event.listen(db.engine, "before_cursor_execute", note)
    try:
        for _ in range(5):
            _token(client, machine)
        assert statements == []
        client.app.state.services.audit.flush()  # type: ignore[attr-defined]
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'token.issued' AND client_id = :c",
               c=machine[0]) == [(6,)]
    assert sql(db, "SELECT last_used_at IS NOT NULL FROM clients WHERE client_id = :c", c=machine[0]) == [(True,)]


def test_the_audit_buffer_writes_every_event_once_on_flush_and_close(db: Database) -> None:
    buffer = AuditBuffer(db, flush_seconds=30, batch_size=10**6)  # neither timer nor size triggers a write
    for n in range(1234):
        buffer.record("token.issued", actor="c", client_id="c", ip="127.0.0.1", n=n)
    assert buffer.pending() == 1234
    buffer.flush()
    buffer.record("token.issued", actor="c", client_id="c", n=1234)
    buffer.close()
    rows = sql(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM audit_events WHERE event = 'token.issued'")
    assert rows == [(1235, 1235)]
    assert buffer.pending() == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_stopped_right_after_a_burst_has_written_every_audit_event(
        db: Database, db_url: str, tmp_path: Path) -> None:
    seed(db)
    machine, _ = _machine_clients(db)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # A flush interval far longer than the test: only the shutdown flush can write the events.
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": db_url, "AUTHSERVER_ISSUER": url,
           "AUTHSERVER_SECRET_KEY": TEST_SECRET, "AUTHSERVER_AUDIT_FLUSH_SECONDS": "10"}
    # Standard error to a file: the shutdown flush logs the 300 events (a line each), more than a pipe
    # nobody reads while the server runs can hold.
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_healthy(url, lambda: server.poll() is None)

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=url, auth=machine, limits=httpx.Limits(max_connections=16),
                                         timeout=httpx.Timeout(60, pool=None)) as http:
                responses = await asyncio.gather(*(http.post("/token", data={"grant_type": "client_credentials"})
                                                   for _ in range(300)))
            return [r.status_code for r in responses]

        assert asyncio.run(burst()) == [200] * 300
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully (the lifespan's shutdown flushes), then re-raises SIGTERM.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        text = log.read_text()
        assert "Application shutdown complete" in text
        assert text.count("authserver.events: token.issued") == 300  # logged as well as stored
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'token.issued' AND client_id = :c",
               c=machine[0]) == [(300,)]


def test_a_read_that_raced_a_change_is_not_kept() -> None:
    cache: ReadCache[str] = ReadCache(ttl=60)
    generation = cache.generation
    cache.clear()  # a local commit lands while the read is in flight
    cache.put("k", "old", read_at=time.monotonic(), generation=generation)
    assert cache.get("k") is MISSING
    cache.put("k", "new", read_at=time.monotonic(), generation=cache.generation)
    assert cache.get("k") == "new"


def test_concurrent_misses_read_once() -> None:
    cache: ReadCache[int] = ReadCache(ttl=60)
    reads: list[int] = []

    def read() -> int:
        time.sleep(0.05)
        reads.append(1)
        return 42

    async def many() -> list[int]:
        return await asyncio.gather(*(cache.fetch("k", read) for _ in range(20)))

    assert asyncio.run(many()) == [42] * 20
    assert reads == [1]


def test_a_value_is_never_served_past_its_period() -> None:
    cache: ReadCache[str] = ReadCache(ttl=60)
    cache.put("k", "v", read_at=time.monotonic() - 61, generation=cache.generation)
    assert cache.get("k") is MISSING


# ---- the hot lane answers like the rest of the app ---------------------------------------------

def test_hot_routes_carry_the_security_and_cors_headers(client: TestClient) -> None:
    for response in (client.get("/jwks.json"), client.get("/.well-known/oauth-authorization-server"),
                     client.post("/token", data={"grant_type": "client_credentials"})):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["access-control-allow-origin"] == "*"
    introspect = client.post("/introspect", data={"token": "x"})
    assert introspect.status_code == 401 and "access-control-allow-origin" not in introspect.headers
    assert introspect.headers["cache-control"] == "no-store"


def test_keys_and_metadata_have_etags_and_answer_304(client: TestClient) -> None:
    for path in ("/jwks.json", "/.well-known/oauth-authorization-server"):
        first = client.get(path)
        etag = first.headers["etag"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert client.get(path, headers={"If-None-Match": '"something-else"'}).status_code == 200
        head = client.head(path)  # methods other than the hot one go through the ordinary routes
        assert head.status_code == 200 and head.headers["etag"] == etag


def test_hot_routes_refuse_oversized_and_repeated_input(client: TestClient) -> None:
    big = client.post("/token", content=b"grant_type=client_credentials&x=" + b"a" * 70_000,
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and big.json()["error"] == "invalid_request"

    def chunked() -> Iterator[bytes]:
        yield b"grant_type=client_credentials&x="
        for _ in range(100):
            yield b"a" * 1000

    streamed = client.post("/introspect", content=chunked(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413
    repeated = client.post("/token", content=b"grant_type=client_credentials&grant_type=refresh_token",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert repeated.status_code == 400 and "repeated" in repeated.json()["error_description"]
    too_many = client.post("/token", content="&".join(f"p{n}=1" for n in range(101)).encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert too_many.status_code == 400 and too_many.json()["error"] == "invalid_request"
    assert client.post("/token", json={"grant_type": "client_credentials"}).status_code == 400
    assert client.get("/token").status_code == 405


def test_events_the_database_refused_are_kept_and_written_once_it_accepts_them(empty_db_url: str) -> None:
    from authserver import migrate

    db = Database(empty_db_url)  # no schema yet: every write fails
    try:
        buffer = AuditBuffer(db, flush_seconds=0.05)
        for n in range(10):
            buffer.record("token.issued", actor="c", client_id="c", n=n)
        time.sleep(0.3)  # several attempts fail meanwhile
        assert buffer.pending() == 10
        migrate.upgrade(db)
        deadline = time.monotonic() + 30
        while buffer.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        buffer.close()
        assert sql(db, "SELECT COUNT(*) FROM audit_events") == [(10,)]
    finally:
        db.dispose()


def test_only_writes_that_matter_clear_the_caches(db: Database, client: TestClient) -> None:
    from sqlalchemy import update

    from authserver.clients.models import Client
    from authserver.db import utcnow
    from authserver.interaction import consents

    seed(db)
    machine, _ = _machine_clients(db)
    _token(client, machine)
    cache = client.app.state.services.clients.entries  # type: ignore[attr-defined]
    assert len(cache) == 1
    with db.session() as s:  # a reported tool call's "last used": not a change any cache reflects
        consents.mark_used(s, uuid.uuid4(), machine[0], RESOURCE, utcnow())
    client.app.state.services.audit.flush()  # type: ignore[attr-defined]  # the client's "last used"
    assert len(cache) == 1
    with db.session() as s:
        s.execute(update(Client).where(Client.client_id == machine[0]).values(name="Renamed"))
    assert len(cache) == 0
    _token(client, machine)
    assert len(cache) == 1
    try:
        with db.session() as s:
            clients.require(s, machine[0]).disabled = True
            s.flush()
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert len(cache) == 1  # a rolled-back change clears nothing


def test_one_event_the_database_cannot_store_does_not_hold_up_the_others(db: Database) -> None:
    buffer = AuditBuffer(db, flush_seconds=30, batch_size=10**6)
    for n in range(20):
        buffer.record("token.issued", actor="c", client_id="c", n=n)
    buffer.record("token.issued", actor="c", client_id="c", unstorable=object())  # not JSON
    buffer.record("token.issued", actor="c", client_id="c", ip="1" * 500)  # a forged X-Forwarded-For
    for n in range(20, 40):
        buffer.record("token.issued", actor="c", client_id="c", n=n)
    buffer.flush()
    assert buffer.pending() == 0
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'token.issued'") == [(41,)]
    assert sql(db, "SELECT ip FROM audit_events WHERE ip IS NOT NULL") == [("1" * 64,)]


def test_a_request_after_a_clear_never_joins_a_read_that_began_before_it() -> None:
    cache: ReadCache[str] = ReadCache(ttl=60)
    values = iter(["before the change", "after the change"])

    def read() -> str:
        time.sleep(0.1)
        return next(values)

    async def scenario() -> tuple[str, str]:
        early = asyncio.ensure_future(cache.fetch("k", read))
        await asyncio.sleep(0.02)  # the first read is in flight
        cache.clear()  # a local commit changes the row
        late = await cache.fetch("k", read)
        return await early, late

    assert asyncio.run(scenario()) == ("before the change", "after the change")
    assert cache.get("k") == "after the change"


def test_a_savepoint_rolled_back_keeps_the_rest_of_the_transactions_writes(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    from authserver.clients.models import Client

    seed(db)
    machine, _ = _machine_clients(db)
    calls: list[int] = []
    db.on_commit(["clients"], lambda: calls.append(1))
    with db.session() as s:
        clients.require(s, machine[0]).disabled = True
        s.flush()
        try:
            with s.begin_nested():
                s.add(Client(client_id=machine[0], name="duplicate"))
                s.flush()
        except IntegrityError:
            pass
    assert calls == [1]


def test_a_connection_the_database_dropped_while_idle_is_replaced_not_failed(db_url: str, backend: str,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite connections are files: nothing drops them")
    from sqlalchemy import text

    from authserver import db as db_module

    database = Database(db_url)
    try:
        with database.session() as s:
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with Database(db_url).session() as other:  # the server drops the idle pooled connection
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.0)
        with database.session() as s:
            assert s.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        database.dispose()


def test_a_cache_period_of_zero_reads_every_time() -> None:
    cache: ReadCache[int] = ReadCache(ttl=0)
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        return len(reads)

    async def twice() -> list[int]:
        return [await cache.fetch("k", read), await cache.fetch("k", read)]

    assert asyncio.run(twice()) == [1, 2]
    assert cache.get("k") is MISSING
