"""High-entropy secrets (tokens, codes, client secrets) and how they are stored.

Every such value is 256 bits from ``secrets``; only its SHA-256 digest is stored, so a
database dump yields nothing usable. Comparison is constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def new_client_id() -> str:
    """A generated ``client_id``: 128 random bits, never starting with ``-``.

    One in 64 URL-safe values starts with ``-``, which every command line reads as an option
    (``authserver clients update -YMu… --name X`` was a usage error); the id is public, so
    drawing again costs nothing that matters.
    """
    while True:
        value = secrets.token_urlsafe(16)
        if not value.startswith("-"):
            return value


class _RandomPool:
    """Random bytes from ``os.urandom``, fetched 4 KiB at a time.

    A token's ``jti`` is drawn on the event loop for every token; one ``urandom`` call each
    would release and retake the GIL every time, letting a busy background thread hold it for
    a whole switch interval (5 ms). The bytes are the same CSPRNG output, just read in bulk.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._buffer = b""
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bytes:
        with self._lock:
            if len(self._buffer) < nbytes:
                self._buffer = os.urandom(self._size)
            out, self._buffer = self._buffer[:nbytes], self._buffer[nbytes:]
            return out


    def reset(self) -> None:
        self._buffer = b""


_pool = _RandomPool()
# A forked child must never hand out the bytes its parent will also use.
os.register_at_fork(after_in_child=_pool.reset)


def new_identifier(nbytes: int = 16) -> str:
    """A random URL-safe identifier (a token's ``jti``): unique, not a secret."""
    return base64.urlsafe_b64encode(_pool.take(nbytes)).rstrip(b"=").decode()


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def secret_matches(value: str, stored_hash: str | None) -> bool:
    if stored_hash is None:
        return False
    return hmac.compare_digest(hash_secret(value), stored_hash)
