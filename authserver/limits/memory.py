"""Counters in this process only: the Redis back end's fallback while Redis is unreachable."""

from __future__ import annotations

import threading
import time

from authserver.limits import NONE, Count, Limiter

# Beyond this many live keys the expired ones are dropped, then the oldest: memory stays bounded
# while an outage lasts, whatever clients send.
MAX_KEYS = 100_000


class MemoryLimiter(Limiter):
    name = "memory"

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, float]] = {}  # key -> (count, expires at, monotonic)
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry

    def _store(self, key: str, count: int, expires: float, now: float) -> None:
        if key not in self._entries and len(self._entries) >= MAX_KEYS:
            for stale in [k for k, (_, e) in self._entries.items() if e <= now]:
                del self._entries[stale]
            while len(self._entries) >= MAX_KEYS:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (count, expires)

    def hit(self, key: str, window: float, cost: int = 1, *, extend: bool = False) -> Count:
        now = time.monotonic()
        with self._lock:
            entry = self._live(key, now)
            count, expires = (entry[0] + cost, now + window if extend else entry[1]) if entry else (cost, now + window)
            self._store(key, count, expires, now)
        return Count.of(count, expires - now)

    def peek(self, key: str) -> Count:
        now = time.monotonic()
        with self._lock:
            entry = self._live(key, now)
        return Count.of(entry[0], entry[1] - now) if entry else NONE

    def acquire(self, key: str, seconds: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._live(key, now) is not None:
                return False
            self._store(key, 1, now + seconds, now)
            return True

    def reset(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)
