"""Short-lived caches of database reads on the hot paths, with one staleness bound.

The token and introspection endpoints read the same few rows for every request: the calling
client, the resource, and whether a given access token has been taken back. Each process
keeps what it read for at most ``AUTHSERVER_CACHE_SECONDS`` (default 1 s), counted from
before the read, so a change made anywhere (another process, another node, the CLI) is
seen everywhere within that bound. A change committed in this process empties the caches
at once (``Database.on_commit``): the console's "disable client" takes effect on the next
request here, and within the bound on the others.

A read that started before such a commit and finished after it is not stored: every cache
keeps a generation number, bumped by ``clear``, and ``put`` drops values loaded under an
older one.

``fetch`` reads each key once however many requests want it at the same moment, and while
traffic keeps a key hot it reads it again in the background before its period ends, so
requests do not queue behind a thread hop and a query once a second. Nothing served is ever
older than the period.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, Literal, TypeVar

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("authserver.cache")

V = TypeVar("V")


class _Missing(enum.Enum):
    MISSING = 0


MISSING = _Missing.MISSING


# A hot key is read again once this fraction of its period is left.
REFRESH_AHEAD = 0.3


class ReadCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.generation = 0
        self._entries: dict[Hashable, tuple[float, V]] = {}
        # Reads in flight, with the generation they started under: a request that comes after a
        # clear never joins a read that began before it.
        self._reads: dict[Hashable, tuple[int, asyncio.Future[V]]] = {}
        # ``clear`` runs in the thread that committed; ``put`` on the event loop.
        self._lock = threading.Lock()

    async def fetch(self, key: Hashable, read: Callable[[], V], keep: Callable[[V], bool] = lambda _: True) -> V:
        """The value for ``key``: cached, or ``read()`` in the threadpool (one read per key at a time).
        ``keep`` says whether a value read may be cached (e.g. not an invalid token's None)."""
        entry = self._entries.get(key)
        if entry is not None:
            left = entry[0] - time.monotonic()
            if left > 0:
                if left < self.ttl * REFRESH_AHEAD and not self._reading(key):
                    self._start_read(key, read, keep).add_done_callback(_log_failure)
                return entry[1]
        pending = self._reading(key)
        if pending is None:
            pending = self._start_read(key, read, keep)
        # shield: a waiter that goes away (client disconnect) must not cancel the others' read.
        return await asyncio.shield(pending)

    def _reading(self, key: Hashable) -> asyncio.Future[V] | None:
        pending = self._reads.get(key)
        return pending[1] if pending is not None and pending[0] == self.generation else None

    def _start_read(self, key: Hashable, read: Callable[[], V], keep: Callable[[V], bool]) -> asyncio.Future[V]:
        read_at, generation = time.monotonic(), self.generation

        async def run() -> V:
            try:
                value = await run_in_threadpool(read)
            finally:
                current = self._reads.get(key)
                if current is not None and current[1] is future:
                    del self._reads[key]
            if keep(value):
                self.put(key, value, read_at=read_at, generation=generation)
            return value

        future = asyncio.ensure_future(run())
        self._reads[key] = (generation, future)
        return future

    def get(self, key: Hashable) -> V | Literal[_Missing.MISSING]:
        """The cached value, or ``MISSING`` (unknown or stale)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return MISSING
        return entry[1]

    def put(self, key: Hashable, value: V, *, read_at: float, generation: int) -> None:
        """Remember ``value`` as read at ``read_at`` (monotonic, taken before the read) under ``generation``."""
        with self._lock:
            if self.ttl <= 0 or generation != self.generation:
                return
            entries = self._entries
            entries.pop(key, None)
            if len(entries) >= self.max_entries:
                # Dicts keep insertion order: the first entry is the oldest read.
                entries.pop(next(iter(entries)), None)
            entries[key] = (read_at + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("background cache read failed: %s", future.exception())
