"""The Redis back end (``AUTHSERVER_REDIS_URL``): one round trip per operation.

A hit is one Lua script, atomic on the Redis server: ``INCRBY``, and the key's expiry set when it
has none (a new window) or on every hit with ``extend``; it answers the count and the
milliseconds left. A hold is ``SET key 1 NX PX ms``. Keys carry ``AUTHSERVER_REDIS_PREFIX`` so
several deployments (or test runs) can share one Redis.

A Redis outage must not take the server down. Decision: every operation that fails to reach
Redis (connect or read timeout, 250 ms each) is answered by an in-process ``MemoryLimiter`` and
Redis is not tried again for ``RETRY_SECONDS``, so requests pay the timeout at most once per
period. The limits then hold per node instead of across nodes: for each limit that means

* sign-in throttling stays on (failing *closed* to the node's own counters: a guesser gets the
  per-account budget once per node, not unlimited guesses; nobody with the right password is
  refused because Redis is away);
* registration and metadata-document fetch limits likewise count per node;
* the ``/token`` per-client limit keeps its local counts (see ``limits.shared``) and adds them
  to Redis again once it is back: *open* in the sense that the cross-node total is not
  enforced during the outage, only each node's share.

Counts made in memory during an outage are not carried over to Redis when it comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from authserver.limits import NONE, Count, Limiter
from authserver.limits.memory import MemoryLimiter

log = logging.getLogger("authserver.limits")

RETRY_SECONDS = 5.0
TIMEOUT_SECONDS = 0.25

HIT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or ARGV[3] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl}
"""


class RedisLimiter(Limiter):
    name = "redis"

    def __init__(self, url: str, *, prefix: str = "authserver:") -> None:
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS,
                                                socket_connect_timeout=TIMEOUT_SECONDS, health_check_interval=30)
        self._prefix = prefix
        self._hit = self._redis.register_script(HIT)
        self._fallback = MemoryLimiter()
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """False while Redis is treated as away (operations go to this process's counters)."""
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = self.available
            self._down_until = time.monotonic() + RETRY_SECONDS
        if first:
            log.warning("Redis is unreachable (%s); limits count per process for the next %.0f s", exc,
                        RETRY_SECONDS)

    def hit(self, key: str, window: float, cost: int = 1, *, extend: bool = False) -> Count:
        if self.available:
            try:
                count, ttl = self._hit(keys=[self._prefix + key],
                                       args=[cost, max(1, int(window * 1000)), "1" if extend else "0"])
                return Count.of(int(count), int(ttl) / 1000)
            except redis.RedisError as exc:
                self._failed(exc)
        return self._fallback.hit(key, window, cost, extend=extend)

    def peek(self, key: str) -> Count:
        if self.available:
            try:
                with self._redis.pipeline(transaction=False) as pipe:
                    value, ttl = pipe.get(self._prefix + key).pttl(self._prefix + key).execute()
                return Count.of(int(value), int(ttl) / 1000) if value is not None and int(ttl) > 0 else NONE
            except redis.RedisError as exc:
                self._failed(exc)
        return self._fallback.peek(key)

    def acquire(self, key: str, seconds: float) -> bool:
        if self.available:
            try:
                return bool(self._redis.set(self._prefix + key, 1, nx=True, px=max(1, int(seconds * 1000))))
            except redis.RedisError as exc:
                self._failed(exc)
        return self._fallback.acquire(key, seconds)

    def reset(self, *keys: str) -> None:
        self._fallback.reset(*keys)
        if keys and self.available:
            try:
                self._redis.delete(*(self._prefix + key for key in keys))
            except redis.RedisError as exc:
                self._failed(exc)

    def close(self) -> None:
        self._redis.close()
