"""A Redis outage (limits.redis): the limits fall back to counters in each process for
``RETRY_SECONDS`` at a time, are never switched off, say so once per period, and go back to Redis
when it answers again; the app keeps serving sign-in and /token with the limits per process.

The outage is real network failure: the limiter talks to Redis through a small TCP proxy this
test can cut (every connection closed, new ones closed at once, or held open without an answer)
and restore, so nothing inside redis-py is patched.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from authserver.clients import repository as clients
from authserver.db import Database
from authserver.interaction.signin import BAD_LOGIN, THROTTLED
from authserver.limits import redis as redis_limits
from authserver.limits.redis import RedisLimiter
from tests.oauth_helpers import PASSWORD, RESOURCE, seed
from tests.security.conftest import (
    REDIS_URL,
    drop_redis_keys,
    error_of,
    headers,
    limited_client,
    require_redis,
    sign_in,
)

DEADLINE = 10.0
WRONG = "not the password"
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every connection is refused


class FlakyRedis:
    """A TCP proxy to the real Redis: ``cut()`` breaks it (``hang=True``: connections are accepted
    and never answered), ``restore()`` mends it; ``attempts`` counts connections made while cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._up = True
        self._hang = False
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.attempts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if not self._up:
                    self.attempts += 1
                    if self._hang:
                        self._open.append(client)  # held, never answered
                    else:
                        client.close()
                    continue
                upstream = socket.create_connection(self._target)
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self, *, hang: bool = False) -> None:
        with self._lock:
            self._up, self._hang, self.attempts = False, hang, 0
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open = []

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
        self._listener.close()


@pytest.fixture
def retry_seconds(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(redis_limits, "RETRY_SECONDS", 0.5)
    return 0.5


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyRedis, str]]:
    """A proxy to the real Redis and a key prefix of this test's own (its keys deleted afterwards)."""
    require_redis()
    parts = urlsplit(REDIS_URL)
    proxy = FlakyRedis((parts.hostname or "127.0.0.1", parts.port or 6379))
    prefix = f"authserver-test:{uuid.uuid4().hex}:"
    yield proxy, prefix
    proxy.close()
    drop_redis_keys(prefix)


def eventually(what: str, done: Callable[[], bool]) -> None:
    end = time.monotonic() + DEADLINE
    while not done():
        assert time.monotonic() < end, f"not within {DEADLINE} s: {what}"
        time.sleep(0.02)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "authserver.limits" and r.levelno == logging.WARNING and "Redis is unreachable" in r.message]


def test_a_redis_outage_falls_back_to_process_counters_warns_once_and_recovers(
        flaky: tuple[FlakyRedis, str], retry_seconds: float, caplog: pytest.LogCaptureFixture) -> None:
    proxy, prefix = flaky
    caplog.set_level(logging.WARNING, logger="authserver.limits")
    store = RedisLimiter(proxy.url, prefix=prefix)
    try:
        assert [store.hit("k", 600).count for _ in range(2)] == [1, 2]  # in Redis
        proxy.cut()
        # Redis is away: every operation answers from this process's counters, none raises, and
        # the limits still count (a guesser is not let through unlimited).
        assert [store.hit("k", 600).count for _ in range(3)] == [1, 2, 3]
        assert not store.available
        assert store.peek("k").count == 3
        assert store.acquire("hold", 600) and not store.acquire("hold", 600)
        store.reset("k")
        assert store.peek("k").count == 0
        assert warnings_of(caplog) == [warnings_of(caplog)[0]]  # once for the period
        assert proxy.attempts <= 1  # and Redis was not asked again within it
        # The period ends with Redis still away: one more try, one more warning, a new period.
        eventually("the retry period ends", lambda: store.available)
        assert store.hit("k", 600).count == 1
        assert not store.available and len(warnings_of(caplog)) == 2
        proxy.restore()
        eventually("the retry period ends", lambda: store.available)
        # Back on Redis, which kept its own count (those made in memory are not carried over).
        assert store.hit("k", 600).count == 3
        assert store.available and len(warnings_of(caplog)) == 2
    finally:
        store.close()


def test_a_redis_that_accepts_and_never_answers_costs_one_timeout_per_period(
        flaky: tuple[FlakyRedis, str], retry_seconds: float, caplog: pytest.LogCaptureFixture) -> None:
    """A hung Redis (or a black-holed network): the first operation waits out the 250 ms read
    timeout, the rest of the period does not try Redis at all."""
    proxy, prefix = flaky
    caplog.set_level(logging.WARNING, logger="authserver.limits")
    proxy.cut(hang=True)
    store = RedisLimiter(proxy.url, prefix=prefix)
    try:
        assert [store.hit("k", 600).count for _ in range(50)] == list(range(1, 51))
        assert proxy.attempts == 1 and len(warnings_of(caplog)) == 1
        assert "Timeout" in warnings_of(caplog)[0]
    finally:
        store.close()


def test_requests_in_flight_when_redis_hangs_all_get_an_answer_and_one_warning(
        flaky: tuple[FlakyRedis, str], retry_seconds: float, caplog: pytest.LogCaptureFixture) -> None:
    """A busy node when Redis stops answering: every request waiting on it times out and falls
    back; the log says so once, not once per request."""
    proxy, prefix = flaky
    caplog.set_level(logging.WARNING, logger="authserver.limits")
    store = RedisLimiter(proxy.url, prefix=prefix)
    threads = 8
    barrier = threading.Barrier(threads)
    counts: list[int] = []
    try:
        store.hit("warm", 600)  # a live connection first, as on a node that was working
        proxy.cut(hang=True)

        def request() -> None:
            barrier.wait()
            counts.append(store.hit("k", 600).count)

        pool = [threading.Thread(target=request) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert sorted(counts) == list(range(1, threads + 1))  # all counted, in this process
        assert 1 <= proxy.attempts <= threads
        assert len(warnings_of(caplog)) == 1
    finally:
        store.close()


def test_a_redis_that_was_never_reachable_still_enforces_every_limit_in_the_process(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="authserver.limits")
    store = RedisLimiter(UNREACHABLE, prefix="authserver-test:")
    try:
        assert [store.hit("k", 600, cost=2).count for _ in range(3)] == [2, 4, 6]
        assert store.peek("k").count == 6 and store.peek("other").count == 0
        assert store.acquire("hold", 600) and not store.acquire("hold", 600)
        store.reset("hold")
        assert store.acquire("hold", 600)
        assert len(warnings_of(caplog)) == 1 and "Connection refused" in warnings_of(caplog)[0]
    finally:
        store.close()


def test_with_redis_unreachable_the_app_serves_sign_in_and_tokens_with_limits_per_process(
        db_url: str, db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a 500, and not unlimited: each limit holds in this process while Redis is away."""
    monkeypatch.setattr(redis_limits, "RETRY_SECONDS", 60.0)  # one outage period for the whole test
    caplog.set_level(logging.WARNING, logger="authserver.limits")
    seed(db)
    with db.session() as s:
        machine = clients.create_client(s, clients.NewClient(name="Nightly sync", grant_types=["client_credentials"],
                                                             scopes=["read:calendar"], resources=[RESOURCE]))
    creds = (machine.client.client_id, machine.client_secret or "")
    backend: dict[str, Any] = {"redis_url": UNREACHABLE, "redis_prefix": "authserver-test:"}
    with limited_client(db_url, db, backend, token_rate_limit=3, limits_sync_seconds=0.05, registration_rate_limit=2,
                        signin_failure_limit=5, signin_account_failure_limit=2, signin_backoff_seconds=60,
                        signin_lock_seconds=120) as client:
        tokens = [client.post("/token", data={"grant_type": "client_credentials", "scope": "read:calendar"},
                              auth=creds) for _ in range(4)]
        assert [r.status_code for r in tokens] == [200, 200, 200, 429]
        assert tokens[-1].json()["error"] == "temporarily_unavailable" and int(tokens[-1].headers["retry-after"]) >= 1

        answers = [sign_in(client, "alice", WRONG, f"198.51.100.{n}") for n in (1, 2)]
        answers.append(sign_in(client, "alice", PASSWORD, "198.51.100.3"))
        assert [(r.status_code, error_of(r.text)) for r in answers] == [(401, BAD_LOGIN)] * 2 + [(401, THROTTLED)]
        assert sign_in(client, "bob", PASSWORD, "198.51.100.4").status_code == 303

        registrations = [client.post("/register", json={"redirect_uris": ["http://127.0.0.1:9/callback"],
                                                        "token_endpoint_auth_method": "none"},
                                     headers=headers("203.0.113.9")) for _ in range(3)]
        assert [r.status_code for r in registrations] == [201, 201, 429]
        assert client.get("/healthz").status_code == 200
    assert len(warnings_of(caplog)) == 1


