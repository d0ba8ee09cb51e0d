"""Each limit store on its own (authserver.limits): the rules of the ``Limiter`` interface, written
once and run on every back end — the database on SQLite and PostgreSQL, Redis (a prefix of this
test's own), and the in-process memory counters (Redis's fallback).

Windows here are short (about a second) and the tests poll for them to end rather than assert
how long anything took.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from authserver import limits
from authserver.db import Database, utcnow
from authserver.limits import NONE, Count, Limiter, memory
from authserver.limits import database as database_limits
from authserver.limits.database import DatabaseLimiter
from authserver.limits.memory import MemoryLimiter
from authserver.limits.models import LimitCounter
from authserver.limits.redis import RedisLimiter
from tests.conftest import TEST_SECRET
from tests.security.conftest import REDIS_URL, drop_redis_keys, require_redis

DEADLINE = 10.0


@pytest.fixture(params=["sqlite", "postgresql", "redis", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    """Overrides the database-only ``backend``: ``db`` follows it for the two databases."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def limiter(backend: str, request: pytest.FixtureRequest) -> Iterator[Limiter]:
    if backend == "memory":
        yield MemoryLimiter()
    elif backend == "redis":
        require_redis()
        prefix = f"authserver-test:{uuid.uuid4().hex}:"
        store = RedisLimiter(REDIS_URL, prefix=prefix)
        try:
            yield store
        finally:
            store.close()
            drop_redis_keys(prefix)
    else:
        yield DatabaseLimiter(request.getfixturevalue("db"))


def eventually(what: str, done: Callable[[], bool]) -> None:
    end = time.monotonic() + DEADLINE
    while not done():
        assert time.monotonic() < end, f"not within {DEADLINE} s: {what}"
        time.sleep(0.05)


def test_a_window_counts_its_hits_and_starts_over_after_its_seconds(limiter: Limiter) -> None:
    assert [limiter.hit("w", 1).count for _ in range(3)] == [1, 2, 3]
    assert limiter.peek("w") == Count(3, 1)
    eventually("the window ends", lambda: limiter.peek("w") == NONE)
    assert limiter.hit("w", 1) == Count(1, 1)  # a new window, from this hit


def test_a_fresh_window_answers_its_length_as_retry_after_and_not_a_second_more(limiter: Limiter) -> None:
    """In memory, ``(now + 600) - now`` is often 600.0000000001 in floating point: the wait must
    still say 600 (it said 601 for about one key in four)."""
    assert {limiter.hit(f"fresh-{n}", 600).retry_after for n in range(50)} == {600}
    assert Count.of(1, 600.0000001) == Count(1, 600) and Count.of(1, 600.002) == Count(1, 601)
    assert Count.of(1, 0.0001) == Count(1, 1)


def test_a_later_hit_does_not_move_the_window_unless_it_extends_it(limiter: Limiter) -> None:
    """Fixed windows from the first hit; ``extend`` restarts it at the latest (failure memories)."""
    limiter.hit("fixed", 1)
    assert limiter.hit("fixed", 600) == Count(2, 1)  # still the first hit's window
    limiter.hit("extended", 1)
    extended = limiter.hit("extended", 600, extend=True)
    assert extended.count == 2 and 590 <= extended.retry_after <= 600
    eventually("the fixed window ends", lambda: limiter.peek("fixed") == NONE)
    assert limiter.peek("extended").count == 2


def test_a_hit_adds_its_cost_and_a_negative_cost_gives_one_back(limiter: Limiter) -> None:
    assert limiter.hit("c", 60, cost=5).count == 5
    assert limiter.hit("c", 60, cost=3).count == 8
    assert limiter.hit("c", 60, cost=-1).count == 7  # sign-in gives back an attempt that succeeded
    assert limiter.peek("c").count == 7


def test_peek_does_not_count(limiter: Limiter) -> None:
    assert limiter.peek("p") == NONE
    limiter.hit("p", 60)
    assert [limiter.peek("p").count for _ in range(3)] == [1, 1, 1]
    assert limiter.hit("p", 60).count == 2


def test_a_hold_is_taken_once_and_is_free_again_after_it_expires(limiter: Limiter) -> None:
    assert limiter.acquire("h", 1)
    assert not limiter.acquire("h", 1)
    assert not limiter.acquire("h", 600)  # asking for longer does not take it either
    assert limiter.peek("h").count == 1  # a hold is seen as a live key (how sign-in checks it)
    assert limiter.acquire("other", 1)
    eventually("the hold expires and is taken again", lambda: limiter.acquire("h", 600))
    assert not limiter.acquire("h", 1)


def test_reset_forgets_counters_and_holds_and_nothing_else(limiter: Limiter) -> None:
    limiter.hit("r1", 60, cost=4)
    limiter.acquire("r2", 60)
    limiter.hit("kept", 60)
    limiter.reset("r1", "r2", "never-seen")
    limiter.reset()
    assert limiter.peek("r1") == NONE
    assert limiter.acquire("r2", 60)
    assert limiter.peek("kept").count == 1


def test_concurrent_hits_from_many_threads_lose_none(limiter: Limiter) -> None:
    """8 threads, 50 hits each, on one key: 400, and every hit saw a count of its own (1…400)."""
    threads, hits = 8, 50
    barrier = threading.Barrier(threads)
    seen: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            barrier.wait()
            counts = [limiter.hit("busy", 600).count for _ in range(hits)]
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
            return
        with lock:
            seen.extend(counts)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    assert limiter.peek("busy").count == threads * hits
    assert sorted(seen) == list(range(1, threads * hits + 1))


def test_concurrent_takers_of_one_hold_get_it_once(limiter: Limiter) -> None:
    """The back-off gate of sign-in: of many attempts at once (many nodes), one goes through."""
    barrier = threading.Barrier(8)
    taken: list[bool] = []

    def take() -> None:
        barrier.wait()
        taken.append(limiter.acquire("gate", 600))

    pool = [threading.Thread(target=take) for _ in range(8)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert sorted(taken) == [False] * 7 + [True]


def rows(db: Database) -> list[str]:
    with db.session() as session:
        return sorted(session.scalars(select(LimitCounter.key)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_purge_removes_expired_counters_and_holds_only(db: Database) -> None:
    store = DatabaseLimiter(db)
    store.hit("short", 60)
    store.acquire("short-hold", 60)
    store.hit("long", 3600)
    store.acquire("long-hold", 3600)
    with db.session() as session:
        assert database_limits.purge(session, utcnow()) == 0
    assert rows(db) == ["long", "long-hold", "short", "short-hold"]
    with db.session() as session:  # two minutes on: the short ones have expired
        assert database_limits.purge(session, utcnow() + timedelta(minutes=2)) == 2
    assert rows(db) == ["long", "long-hold"]
    assert store.peek("long").count == 1 and not store.acquire("long-hold", 1)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_window_that_ended_starts_over_in_its_row_before_any_purge(db: Database) -> None:
    """An expired row is reused by the next hit (a new window), and a hold past its time retaken."""
    store = DatabaseLimiter(db)
    store.acquire("again-hold", 1)  # first, so it has ended by the time the window has
    store.hit("again", 1, cost=7)
    eventually("the window ends", lambda: store.peek("again") == NONE)
    assert store.hit("again", 60).count == 1
    assert store.acquire("again-hold", 60)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(LimitCounter)) == 2


def test_a_key_is_fixed_length_and_holds_nothing_it_was_made_of() -> None:
    typed = "correct horse battery staple"
    made = limits.key(TEST_SECRET, "signin-username", typed)
    assert re.fullmatch(r"[0-9a-f]{40}", made)
    assert typed not in made and "signin" not in made
    assert len(limits.key(TEST_SECRET, "signin-username", "x" * 10_000)) == 40
    assert len(limits.key(TEST_SECRET, "signin-username", "")) == 40
    assert limits.key(TEST_SECRET, "signin-username", typed) == made  # the same on every node
    assert limits.key("another secret" * 3, "signin-username", typed) != made
    assert limits.key(TEST_SECRET, "signin-username", typed + " ") != made
    assert limits.key(TEST_SECRET, "address", typed) != made
    # Parts cannot run into each other, whatever they hold.
    assert limits.key(TEST_SECRET, "a", "b") != limits.key(TEST_SECRET, "a\0b")
    assert limits.key(TEST_SECRET, "ab", "c") != limits.key(TEST_SECRET, "a", "bc")


def test_memory_counters_stay_bounded_dropping_expired_keys_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "MAX_KEYS", 10)
    store = MemoryLimiter()
    for n in range(5):
        store.hit(f"gone-{n}", 0.01)
    time.sleep(0.02)
    for n in range(10):
        store.hit(f"live-{n}", 60)
    assert len(store._entries) == 10
    assert all(store.peek(f"live-{n}").count == 1 for n in range(10))  # only the expired ones made room
    for n in range(10, 100):  # a flood of new keys: the oldest give way
        store.hit(f"live-{n}", 60)
        assert store.acquire(f"hold-{n}", 60)
        assert len(store._entries) <= 10
    assert store.peek("live-99").count == 1 and store.peek("live-0") == NONE
