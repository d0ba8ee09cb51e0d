"""Refresh rotation holds across processes: several server processes share one database.

Four uvicorn processes (four "nodes"; on SQLite, four processes on one file) receive the same
refresh token at the same moment.
Exactly one successor may be created; the others either get that same pair back (the
benign race grace window) or, with the window off, the reuse is detected.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from authserver.db import Database
from authserver.tokens.models import RefreshToken
from tests.conftest import ISSUER, TEST_SECRET
from tests.live import wait_healthy
from tests.oauth_helpers import authorize_params, exchange, pkce_pair, query, run_flow, seed

PROCESSES = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def nodes(db_url: str, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    grace = getattr(request, "param", 10)
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": db_url, "AUTHSERVER_ISSUER": ISSUER,
           "AUTHSERVER_SECRET_KEY": TEST_SECRET, "AUTHSERVER_REFRESH_REUSE_GRACE": str(grace)}
    ports = [free_port() for _ in range(PROCESSES)]
    procs = [subprocess.Popen([sys.executable, "-m", "uvicorn", "authserver.app:create_app_from_env", "--factory",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env)
             for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            wait_healthy(url, lambda proc=proc: proc.poll() is None)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def race(urls: list[str], client_id: str, token: str) -> list[httpx.Response]:
    barrier = threading.Barrier(len(urls))
    results: list[httpx.Response] = [None] * len(urls)  # type: ignore[list-item]

    def send(i: int, url: str) -> None:
        with httpx.Client() as http:
            barrier.wait()
            results[i] = http.post(f"{url}/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                                         "client_id": client_id})

    threads = [threading.Thread(target=send, args=(i, url)) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def first_tokens(client: TestClient, db: Database) -> tuple[str, dict]:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="read:calendar offline_access"))
    return world.public_id, exchange(client, query(location)["code"], verifier, world.public_id).json()


def family_size(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(RefreshToken)) or 0)


def test_concurrent_refresh_on_four_processes_creates_exactly_one_successor(
        nodes: list[str], client: TestClient, db: Database) -> None:
    client_id, tokens = first_tokens(client, db)
    for _ in range(3):  # several rounds, to give the race chances to go wrong
        responses = race(nodes, client_id, tokens["refresh_token"])
        assert [r.status_code for r in responses] == [200] * PROCESSES, [r.text for r in responses]
        bodies = [r.json() for r in responses]
        assert all(b == bodies[0] for b in bodies), "racing requests got different successors"
        tokens = bodies[0]
    assert family_size(db) == 4  # the first token and exactly one successor per round


@pytest.mark.parametrize("nodes", [0], indirect=True)
def test_concurrent_refresh_without_grace_detects_reuse(nodes: list[str], client: TestClient, db: Database) -> None:
    client_id, tokens = first_tokens(client, db)
    responses = race(nodes, client_id, tokens["refresh_token"])
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code != 200)
    assert family_size(db) <= 2
    with db.session() as s:
        live = s.scalar(select(func.count()).select_from(RefreshToken).where(RefreshToken.revoked_at.is_(None),
                                                                             RefreshToken.rotated_at.is_(None)))
    assert live == 0  # the reuse killed the family, the successor included
