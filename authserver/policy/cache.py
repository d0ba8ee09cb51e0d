"""The current registration policy, read per request through a short in-process cache.

Bound: a policy saved on any node is seen by every node at most ``policy_cache_seconds`` later
(default 5 s, never more: the setting is capped at 5); the node that saved it sees it at once
(``invalidate``). Within the bound, ``/register``, discovery and the metadata-document fetcher
read memory only, so the hot paths gain no database round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from authserver.db import Database
from authserver.policy import repository
from authserver.policy.repository import RegistrationPolicy
from authserver.settings import Settings


class PolicyCache:
    def __init__(self, db: Database, settings: Settings, *, max_age: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._settings = settings
        self._max_age = settings.policy_cache_seconds if max_age is None else max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._value: tuple[float, RegistrationPolicy] | None = None

    def current(self) -> RegistrationPolicy:
        cached = self._value
        if cached is not None and self._clock() - cached[0] < self._max_age:
            return cached[1]
        with self._lock:
            # Threads that waited for the lock use what the first one loaded.
            cached = self._value
            if cached is not None and self._clock() - cached[0] < self._max_age:
                return cached[1]
            with self._db.read_session() as session:
                policy = repository.load(session, self._settings)
            self._value = (self._clock(), policy)
            return policy

    def is_fresh(self) -> bool:
        """Whether ``current()`` would answer from memory (async routes skip the thread hop then)."""
        cached = self._value
        return cached is not None and self._clock() - cached[0] < self._max_age

    def invalidate(self) -> None:
        self._value = None
