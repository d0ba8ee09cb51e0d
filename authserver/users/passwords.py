"""Human passwords: argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1).

Machine secrets (client secrets, tokens) are 256-bit random values and are stored as
SHA-256 instead (see ``authserver.secrets``): a password hash there would cost
~170 ms per token request for no gain in security.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16)

# Verified against when the username is unknown, so that a miss costs as much as a hit.
_DUMMY_HASH = HASHER.hash("authserver-timing-equaliser")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return HASHER.check_needs_rehash(stored_hash)
