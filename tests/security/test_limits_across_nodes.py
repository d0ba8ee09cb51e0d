"""Abuse limits hold across nodes: two real server processes (``authserver serve``) on one database,
an attacker splitting a flood between them.

Each case runs two processes on different ports sharing one store: one PostgreSQL database with
the database back end (the case the issue names), the same PostgreSQL database with counters in
one shared Redis (a prefix of its own, its keys deleted afterwards), and one SQLite file with the
database back end. The requests come from loopback, which ``AUTHSERVER_TRUSTED_PROXIES`` trusts,
so ``X-Forwarded-For`` names the attacker's address.

Starting a pair of processes costs seconds on a small machine, so one pair per case serves every
test of this module (a module-scoped fixture, not the function-scoped ``db_url``/``limit_backend``
ones): the tests keep apart by address, username and client, and the databases and Redis keys are
dropped when the module ends.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from authserver.clients import repository as clients
from authserver.db import Database
from authserver.interaction.signin import BAD_LOGIN, THROTTLED
from authserver.limits import Limiter
from authserver.limits.database import DatabaseLimiter
from authserver.limits.redis import RedisLimiter
from authserver.limits.shared import _digest
from authserver.users import repository as users
from tests.conftest import ISSUER, TEST_SECRET, pg_database
from tests.live import at_once, wait_healthy
from tests.oauth_helpers import PASSWORD, RESOURCE, count, seed
from tests.security.conftest import REDIS_URL, csrf_of, drop_redis_keys, error_of, require_redis

LOOPBACK = "http://127.0.0.1:9/callback"
WRONG = "not the password"
REGISTRATIONS = 3
TOKENS = 10
SYNC_SECONDS = 0.1
ACCOUNT_FAILURES = 3
# Every process of a case runs with these (the budgets small, the waits far longer than a test).
LIMITS = {"AUTHSERVER_REGISTRATION_RATE_LIMIT": str(REGISTRATIONS), "AUTHSERVER_TOKEN_RATE_LIMIT": str(TOKENS),
          "AUTHSERVER_TOKEN_RATE_WINDOW": "600", "AUTHSERVER_LIMITS_SYNC_SECONDS": str(SYNC_SECONDS),
          "AUTHSERVER_SIGNIN_FAILURE_LIMIT": "5", "AUTHSERVER_SIGNIN_ACCOUNT_FAILURE_LIMIT": str(ACCOUNT_FAILURES),
          "AUTHSERVER_SIGNIN_BACKOFF_SECONDS": "60", "AUTHSERVER_SIGNIN_LOCK_SECONDS": "120"}
DEADLINE = 10.0  # seconds a node may take to learn what the other counted


@dataclass
class Nodes:
    a: str
    b: str
    db: Database
    limits: Limiter  # the store both nodes count in, seen from the test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["postgresql-database", "postgresql-redis", "sqlite-database"])
def nodes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    database, store = request.param.split("-")
    with shared_database(request, database, tmp_path_factory) as url:
        env = {**os.environ, "AUTHSERVER_DATABASE_URL": url, "AUTHSERVER_ISSUER": ISSUER,
               "AUTHSERVER_SECRET_KEY": TEST_SECRET, "AUTHSERVER_TRUSTED_PROXIES": json.dumps(["127.0.0.1"]),
               "AUTHSERVER_LOG_LEVEL": "warning", **LIMITS}
        prefix = f"authserver-test:{uuid.uuid4().hex}:"
        if store == "redis":
            require_redis()
            env.update(AUTHSERVER_REDIS_URL=REDIS_URL, AUTHSERVER_REDIS_PREFIX=prefix)
        db = Database(url)
        seed(db)
        limits: Limiter = RedisLimiter(REDIS_URL, prefix=prefix) if store == "redis" else DatabaseLimiter(db)
        logs = tmp_path_factory.mktemp("nodes")
        ports = [free_port(), free_port()]
        procs = [subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=(logs / f"{port}.log").open("wb"))
                 for port in ports]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        try:
            for url_, proc in zip(urls, procs, strict=True):
                wait_healthy(url_, lambda proc=proc: proc.poll() is None)
            yield Nodes(urls[0], urls[1], db, limits)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            limits.close()
            db.dispose()
            if store == "redis":
                drop_redis_keys(prefix)


@contextmanager
def shared_database(request: pytest.FixtureRequest, kind: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh migrated database of this kind, for one module; its URL."""
    if kind == "sqlite":
        target = tmp_path_factory.mktemp("shared") / "authserver.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    template = request.getfixturevalue("_pg_template")
    if template is None:
        pytest.skip("PostgreSQL is not reachable")
    with pg_database("authserver_nodes", template) as url:
        yield url


def assert_rate_limited(response: httpx.Response) -> None:
    """429, Retry-After, an OAuth-style JSON error, never cached."""
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == "temporarily_unavailable"


def register(node: str, ip: str) -> httpx.Response:
    return httpx.post(f"{node}/register", json={"redirect_uris": [LOOPBACK], "token_endpoint_auth_method": "none",
                                                "client_name": "Flood"}, headers={"X-Forwarded-For": ip})


def sign_in(node: str, username: str, password: str, ip: str) -> httpx.Response:
    """The sign-in page of ``node`` from ``ip``, in a fresh browser; the POST's response."""
    with httpx.Client(base_url=node, headers={"X-Forwarded-For": ip}) as browser:
        page = browser.get("/login")
        return browser.post("/login", data={"csrf": csrf_of(page.text), "username": username, "password": password,
                                            "next": "/account"})


def test_registration_flood_split_across_two_nodes_is_refused_by_the_second(nodes: Nodes) -> None:
    before = count(nodes.db, "clients")
    flooder = "198.51.100.60"
    # The budget spent on both nodes by turns: each one alone has seen fewer than the limit.
    for node in (nodes.a, nodes.b, nodes.a):
        assert register(node, flooder).status_code == 201
    assert_rate_limited(register(nodes.b, flooder))
    assert_rate_limited(register(nodes.a, flooder))
    assert register(nodes.b, "198.51.100.61").status_code == 201  # another address is not held back
    assert count(nodes.db, "clients") - before == REGISTRATIONS + 1


def test_password_guessing_split_across_two_nodes_is_throttled_by_the_second(nodes: Nodes) -> None:
    """Failures on either node count for the account everywhere; an unknown name behaves the same."""
    answers: dict[str, list[tuple[int, str | None]]] = {}
    for username, net in (("alice", "203.0.113"), ("nobody-by-this-name", "192.0.2")):
        # A new address for each guess, alternating nodes: only the per-username rule can see them all.
        guesses = [sign_in(node, username, WRONG, f"{net}.{n}")
                   for n, node in enumerate((nodes.a, nodes.b, nodes.a), start=1)]
        # The right password now, from a fresh address, on the other node: it waits like the rest.
        after = [sign_in(nodes.b, username, PASSWORD, f"{net}.10"), sign_in(nodes.a, username, PASSWORD, f"{net}.11")]
        answers[username] = [(r.status_code, error_of(r.text)) for r in guesses + after]
    assert answers["alice"] == [(401, BAD_LOGIN)] * ACCOUNT_FAILURES + [(401, THROTTLED)] * 2
    assert answers["nobody-by-this-name"] == answers["alice"]  # nothing tells whether the account exists
    # Another account is not slowed on either node.
    assert sign_in(nodes.b, "bob", PASSWORD, "203.0.113.12").status_code == 303
    assert sign_in(nodes.a, "bob", PASSWORD, "203.0.113.13").status_code == 303


def test_a_registration_burst_on_two_nodes_at_once_creates_no_more_than_the_limit(nodes: Nodes) -> None:
    before = count(nodes.db, "clients")
    flooder = "198.51.100.70"
    answers = at_once([lambda node=node: register(node, flooder) for node in (nodes.a, nodes.b) * 5])
    assert sorted(r.status_code for r in answers) == [201] * REGISTRATIONS + [429] * (10 - REGISTRATIONS)
    assert count(nodes.db, "clients") - before == REGISTRATIONS


def test_a_guessing_burst_on_two_nodes_at_once_learns_no_more_verdicts_than_the_budget(nodes: Nodes) -> None:
    """Each attempt takes its place in the username's count before argon2 runs, and past the free
    budget only the one that takes the back-off hold goes on: racing nodes learn no more."""
    with nodes.db.session() as s:
        users.create_user(s, "carol", PASSWORD)
    answers = at_once([lambda node=node, n=n: sign_in(node, "carol", WRONG, f"203.0.113.{100 + n}")
                     for n, node in enumerate((nodes.a, nodes.b) * 6)])
    verdicts = sorted((r.status_code, error_of(r.text)) for r in answers)
    assert verdicts == sorted([(401, BAD_LOGIN)] * ACCOUNT_FAILURES + [(401, THROTTLED)] * (12 - ACCOUNT_FAILURES))
    assert sign_in(nodes.b, "carol", PASSWORD, "203.0.113.99").status_code == 401  # and the account now waits


def machine_client(db: Database) -> tuple[str, str]:
    with db.session() as s:  # seed() registered the scope and the resource
        made = clients.create_client(s, clients.NewClient(name="Nightly sync", grant_types=["client_credentials"],
                                                          scopes=["read:calendar"], resources=[RESOURCE]))
    return made.client.client_id, made.client_secret or ""


def wait_for(what: str, done: Any, deadline: float = DEADLINE) -> None:
    """Poll ``done()`` (not sleep blindly) until it is true, at most ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not done():
        assert time.monotonic() < end, f"not within {deadline} s: {what}"
        time.sleep(0.02)


def test_token_flood_split_across_two_nodes_is_refused_by_the_second_after_one_sync(nodes: Nodes) -> None:
    """The /token limit is counted per process and added to the shared store every sync interval
    (limits.shared): the second node refuses once it has synced, and the total admitted by both
    exceeds the limit only by what the second admitted before its first sync."""
    creds = machine_client(nodes.db)
    key = "token:" + _digest(creds[0])

    def token(node: str) -> httpx.Response:
        return httpx.post(f"{node}/token", data={"grant_type": "client_credentials", "scope": "read:calendar"},
                          auth=creds)

    # Node A alone sees every request it admits: exactly the limit.
    assert [token(nodes.a).status_code for _ in range(TOKENS)] == [200] * TOKENS
    assert_rate_limited(token(nodes.a))
    wait_for("A's counts reach the shared store", lambda: nodes.limits.peek(key).count == TOKENS)
    # Node B has never synced this client: it admits until its first sync tells it the total. The
    # attacker paces its requests at one per sync interval.
    b_admitted, refused, end = 0, None, time.monotonic() + DEADLINE
    while refused is None:
        assert time.monotonic() < end, f"B admitted {b_admitted} and never refused"
        response = token(nodes.b)
        if response.status_code == 200:
            b_admitted += 1
            time.sleep(SYNC_SECONDS)
        else:
            refused = response
    assert_rate_limited(refused)
    # The documented slack (limits.shared): what B admitted in about one sync interval plus a round
    # trip; at one request per interval, a handful (a round trip allowed up to 0.5 s on a busy machine).
    slack = 1 + math.ceil((SYNC_SECONDS + 0.5) / SYNC_SECONDS)
    assert 1 <= b_admitted <= slack
    # Every admitted request was counted in the shared store, none lost between the nodes.
    wait_for("B's counts reach the shared store", lambda: nodes.limits.peek(key).count == TOKENS + b_admitted)
    assert_rate_limited(token(nodes.a))
