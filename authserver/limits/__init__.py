"""Abuse limits that hold across every node: counters in a window, in a store all nodes share.

One interface (``Limiter``), three back ends:

* ``database`` (the default): a ``limit_counters`` row per key in the database every node
  already shares. A hit is one atomic upsert (``INSERT … ON CONFLICT DO UPDATE SET hits =
  hits + 1 … RETURNING``; SQLite ≥ 3.35 and PostgreSQL), so two nodes counting one key at once
  never lose a hit, whatever the isolation level. Expired rows are removed by the purger.
* ``redis`` when ``AUTHSERVER_REDIS_URL`` is set: one Lua script per hit (INCRBY and the expiry
  together, atomic on the server). An unreachable Redis degrades to ``memory`` counters in each
  process for a few seconds at a time (see ``redis``): limits then hold per node (a budget N
  times larger with N nodes), never "unlimited" and never "everyone refused".
* ``memory``: the same rules in one process (the Redis fallback; tests of the rules).

Windows are fixed and start at a key's first hit (Redis ``INCR`` + ``EXPIRE`` semantics, the
same on every back end): a key's count resets ``window`` seconds after its first hit, or, with
``extend=True``, ``window`` seconds after its latest hit (failure memories: they last as long as
the failures go on). A fixed window admits at most twice its limit across one boundary; every
limit here is an abuse bound, not a billing quota, so that is acceptable and stated.

A hold (``acquire``) is a key that exists for ``seconds`` and can be taken by one caller only
while it does not exist: the back-off gate of sign-in throttling, atomic across nodes.

Keys are short ASCII strings chosen by the caller; anything a client typed is hashed first
(see ``key``), so the store holds nothing an attacker chose verbatim and a key's length is fixed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Count:
    """A key's count in its current window and the seconds until that window ends (0: no window)."""

    count: int
    retry_after: int

    @staticmethod
    def of(count: int, remaining_seconds: float) -> Count:
        if count <= 0 and remaining_seconds <= 0:
            return Count(0, 0)
        # Whole milliseconds first (Redis's precision): float noise in ``(now + window) - now`` must
        # not round a fresh window of 600 s up to a Retry-After of 601.
        return Count(count, max(1, math.ceil(round(remaining_seconds, 3))))


NONE = Count(0, 0)


class Limiter(ABC):
    """Counters shared by every node (see the module docstring)."""

    name: str

    @abstractmethod
    def hit(self, key: str, window: float, cost: int = 1, *, extend: bool = False) -> Count:
        """Add ``cost`` to ``key``'s count (a new window of ``window`` seconds when none is running);
        the count after it. ``extend``: the window restarts at this hit."""

    @abstractmethod
    def peek(self, key: str) -> Count:
        """The count without adding to it."""

    @abstractmethod
    def acquire(self, key: str, seconds: float) -> bool:
        """Take the hold ``key`` for ``seconds``: True when it was free (now taken), False when held."""

    @abstractmethod
    def reset(self, *keys: str) -> None:
        """Forget these counters and holds."""

    def close(self) -> None:  # noqa: B027 (optional for back ends that hold nothing)
        """Release connections (the app's lifespan calls it)."""


def key(secret: str, *parts: str) -> str:
    """A fixed-length key for values a client chose (a typed username, a client_id): HMAC-SHA-256
    with the server's secret, so the store never holds what was typed (often a password) and its
    entries cannot be matched against guesses without the secret."""
    # Each part length-prefixed: ("a", "b") and ("a\0b",) are different keys whatever the parts hold.
    message = b"".join(len(data).to_bytes(4, "big") + data for data in (part.encode() for part in parts))
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return digest[:40]


def build_limiter(settings: object, db: object) -> Limiter:
    """The back end the settings choose: Redis when ``redis_url`` is set, else the database."""
    from authserver.db import Database
    from authserver.settings import Settings

    assert isinstance(settings, Settings) and isinstance(db, Database)
    if settings.redis_url:
        from authserver.limits.redis import RedisLimiter

        return RedisLimiter(settings.redis_url, prefix=settings.redis_prefix)
    from authserver.limits.database import DatabaseLimiter

    return DatabaseLimiter(db)
