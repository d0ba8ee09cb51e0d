"""Encryption of signing keys at rest, and cookie-signing material.

Both are derived from AUTHSERVER_SECRET_KEY with HKDF-SHA256 under distinct labels,
so one secret never serves two purposes directly.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(secret: str, purpose: str, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=f"authserver/{purpose}".encode()).derive(secret.encode())


class KeyEncryptor:
    """AES-256-GCM under a key derived for one ``purpose``; associated data binds each blob to its row."""

    def __init__(self, secret: str, purpose: str = "signing-key-encryption") -> None:
        self._aead = AESGCM(derive_key(secret, purpose))

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], associated)
