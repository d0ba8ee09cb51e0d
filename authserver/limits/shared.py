"""A request-rate limit for the token endpoint's hot path: counted in this process, added to the
shared store in batches.

``client_credentials`` is served on the event loop without a database write (issue 9); a hit in
the shared store per request would add a round trip and a write to every token. So each process
counts its own requests per key in memory and a background thread adds them to the shared
``Limiter`` at most every ``sync_seconds`` (``AUTHSERVER_LIMITS_SYNC_SECONDS``, default 0.5 s),
one ``hit(key, cost=n)`` per key with requests since the last sync, learning the total of every
node in the same call.

A request is admitted when (the shared total this process last learned) + (its own requests
since) is below the limit, so:

* one process: exact (its own requests are all in its view);
* N processes: a window admits at most ``limit + (the requests the other processes admitted in
  the sync interval plus one round trip before this one's view was refreshed)`` — i.e. the
  overshoot is bounded by the others' rate times ~``sync_seconds``; with a limit of 1,200 a
  minute per client, at most ~10 extra tokens per other node at that rate.

Refused requests are not counted (a client that keeps trying does not extend its own wait).
When the store fails (database or Redis away), the counts stay in memory and are added at the
next sync that succeeds; meanwhile each process enforces the limit on its own requests.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time

from authserver.limits import Limiter

log = logging.getLogger("authserver.limits")

IDLE_EXIT_SECONDS = 5.0
MAX_KEYS = 100_000


class SharedRate:
    def __init__(self, limiter: Limiter, *, prefix: str, limit: int, window: float, sync_seconds: float) -> None:
        self._limiter = limiter
        self._prefix = prefix
        self.limit = limit
        self.window = window
        self.sync_seconds = sync_seconds
        self._lock = threading.Lock()
        self._syncing = threading.Lock()  # one sync at a time: a caller's sync waits for one under way
        self._pending: dict[str, int] = {}
        # key -> (the shared total learned at the last sync, monotonic time its window ends)
        self._known: dict[str, tuple[int, float]] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False

    def admit(self, key: str) -> int | None:
        """None when the request may go on (and it is counted), else the seconds to wait (Retry-After)."""
        if self.limit <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            known, ends = self._known.get(key, (0, 0.0))
            if ends <= now:
                known = 0
            pending = self._pending.get(key, 0)
            if known + pending >= self.limit:
                return max(1, math.ceil(ends - now)) if ends > now else max(1, math.ceil(self.sync_seconds))
            if key not in self._pending and len(self._pending) >= MAX_KEYS:
                return max(1, math.ceil(self.sync_seconds))  # more distinct clients at once than anyone has
            self._pending[key] = pending + 1
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="authserver-limits-sync", daemon=True)
                self._thread.start()
        return None

    def sync(self) -> None:
        """Add the pending counts to the shared store and learn the totals (the thread calls it)."""
        with self._syncing:
            self._sync()

    def _sync(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        failed: dict[str, int] = {}
        for key, n in batch.items():
            try:
                count = self._limiter.hit(self._prefix + _digest(key), self.window, n)
            except Exception:  # the store is away: keep the counts for the next sync
                log.exception("could not add token request counts to the shared limit store")
                failed[key] = n
                continue
            with self._lock:
                self._known[key] = (count.count, time.monotonic() + count.retry_after)
        now = time.monotonic()
        with self._lock:
            for key, n in failed.items():
                self._pending[key] = self._pending.get(key, 0) + n
            if len(self._known) > MAX_KEYS // 2:
                for stale in [k for k, (_, ends) in self._known.items() if ends <= now]:
                    del self._known[stale]

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            self._wake.wait(self.sync_seconds)
            self._wake.clear()
            with self._lock:
                busy = bool(self._pending)
                if not busy and (self._closed or time.monotonic() - idle_since > IDLE_EXIT_SECONDS):
                    self._thread = None
                    return
            if busy:
                self.sync()
                idle_since = time.monotonic()

    def close(self) -> None:
        """Add what is pending before the process goes (the app's lifespan)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(5)
        self.sync()


def _digest(key: str) -> str:
    """Keys here are client_ids (up to 2,048 characters): the store gets a fixed-length digest."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]
