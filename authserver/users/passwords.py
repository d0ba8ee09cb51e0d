"""Human passwords: argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1).

Machine secrets (client secrets, tokens) are 256-bit random values and are stored as
SHA-256 instead (see ``authserver.secrets``): a password hash there would cost
~170 ms per token request for no gain in security.

Every argon2 computation runs on a small pool of its own, as many threads as the CPUs this
process may use (``AUTHSERVER_ARGON2_CONCURRENCY`` to choose; see ``configure``). argon2-cffi
releases the GIL while it hashes, so one computation per CPU is all the throughput there is;
more at once would only queue on the CPUs, each holding its 19 MiB (16 sign-ins at once were
300 MB more RSS). Only the pool's threads ever touch those buffers, so the memory malloc keeps
for them stays bounded too. Callers wait for their turn in their own thread: they must not hold
a database transaction meanwhile (sign-in verifies between its read and its write transaction).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16)

T = TypeVar("T")


def default_concurrency() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on this platform
        return max(1, os.cpu_count() or 1)


class _Argon2Pool:
    """At most ``size`` argon2 computations at once, on threads of their own (created when first used)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="argon2",
                                            initializer=self._mark)

    def _mark(self) -> None:
        self._local.inside = True

    def run(self, fn: Callable[..., T], *args: object) -> T:
        if getattr(self._local, "inside", False):
            return fn(*args)
        return self._executor.submit(fn, *args).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False)


_lock = threading.Lock()
_pool: _Argon2Pool | None = None


def configure(concurrency: int | None = None) -> int:
    """Size the pool (None: ``default_concurrency()``); the size in force. Idempotent for the same size."""
    global _pool
    size = concurrency or default_concurrency()
    with _lock:
        if _pool is None or _pool.size != size:
            old, _pool = _pool, _Argon2Pool(size)
            if old is not None:
                old.shutdown()  # its running computations finish; new ones go to the new pool
        return _pool.size


def _run(fn: Callable[..., T], *args: object) -> T:
    pool = _pool
    if pool is None:
        configure()
        pool = _pool
        assert pool is not None
    return pool.run(fn, *args)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so that a miss costs as much as a hit.

    Made when first needed (not at import: 19 MiB and ~30 ms that a process may never need).
    """
    return HASHER.hash("authserver-timing-equaliser")


def hash_password(password: str) -> str:
    return _run(HASHER.hash, password)


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def verify_password(stored_hash: str | None, password: str) -> bool:
    return _run(_verify, stored_hash, password)


def needs_rehash(stored_hash: str) -> bool:
    return HASHER.check_needs_rehash(stored_hash)
