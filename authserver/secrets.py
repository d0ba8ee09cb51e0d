"""High-entropy secrets (tokens, codes, client secrets) and how they are stored.

Every such value is 256 bits from ``secrets``; only its SHA-256 digest is stored, so a
database dump yields nothing usable. Comparison is constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def secret_matches(value: str, stored_hash: str | None) -> bool:
    if stored_hash is None:
        return False
    return hmac.compare_digest(hash_secret(value), stored_hash)
