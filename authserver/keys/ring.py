"""Signing keys: generation, rotation, the JWKS, and an in-memory cache for the hot path.

ES256 (P-256) is the signing algorithm: 40 µs to sign and 106 µs to verify here, and
every JOSE library supports it. The current key and the serialised JWKS live in
memory. Several nodes (or ``authserver keys rotate`` in another process) share the
keys through the database, so each process's copy has a stated staleness bound:

* the snapshot is re-read when it is older than ``refresh_interval`` (``REFRESH_SECONDS``,
  5 s): within that bound of a rotation anywhere, every node signs with the new key and
  publishes it in its JWKS;
* a token naming a ``kid`` this snapshot does not hold (signed by a node that already saw a
  rotation) makes the ring re-read at once (``public_key``), so such a token verifies on
  every node without waiting for the period. Anyone can send made-up kids, so those re-reads
  are rate-limited: at most one per ``miss_reload_interval`` (``MISS_RELOAD_SECONDS``, 1 s)
  per process, concurrent misses share it, and an unknown kid still fails when nothing new
  was found.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from authserver.db import Database, utcnow
from authserver.keys.crypto import KeyEncryptor
from authserver.keys.models import SigningKey

ALG = "ES256"
# The staleness bound of every process's copy of the keys (see the module docstring).
REFRESH_SECONDS = 5.0
# At most one immediate re-read per this many seconds for tokens naming an unknown kid.
MISS_RELOAD_SECONDS = 1.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: ec.EllipticCurvePublicKey, kid: str) -> dict[str, Any]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC", "crv": "P-256",
        "x": _b64(numbers.x.to_bytes(32, "big")), "y": _b64(numbers.y.to_bytes(32, "big")),
        "kid": kid, "alg": ALG, "use": "sig",
    }


def _thumbprint_kid(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint: a kid that is stable and unique to the key."""
    jwk = public_jwk(public_key, "")
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def generate_key(session: Session, encryptor: KeyEncryptor, retention: int) -> SigningKey:
    """Create a new current key; the previous current key is retired but stays published."""
    now = utcnow()
    private = ec.generate_private_key(ec.SECP256R1())
    kid = _thumbprint_kid(private.public_key())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    session.execute(
        update(SigningKey).where(SigningKey.retired_at.is_(None))
        .values(retired_at=now, publish_until=now + timedelta(seconds=retention))
    )
    key = SigningKey(kid=kid, alg=ALG, private_key_encrypted=encryptor.encrypt(pem, kid.encode()),
                     public_jwk=public_jwk(private.public_key(), kid), created_at=now)
    session.add(key)
    session.flush()
    return key


def published_keys(session: Session, now: datetime | None = None) -> list[SigningKey]:
    now = now or utcnow()
    return list(session.scalars(
        select(SigningKey)
        .where(or_(SigningKey.publish_until.is_(None), SigningKey.publish_until > now))
        .order_by(SigningKey.created_at.desc())
    ))


def all_keys(session: Session) -> list[SigningKey]:
    """Every key ever made, newest first, including those no longer published (for the console)."""
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())))


def current_key(session: Session) -> SigningKey | None:
    return session.scalar(
        select(SigningKey).where(SigningKey.retired_at.is_(None)).order_by(SigningKey.created_at.desc()).limit(1)
    )


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    alg: str
    private_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Snapshot:
    signing: ActiveKey
    jwks: dict[str, Any]
    jwks_body: bytes
    public_keys: dict[str, ec.EllipticCurvePublicKey]
    loaded_at: float


class KeyRing:
    def __init__(self, db: Database, encryptor: KeyEncryptor, retention: int,
                 refresh_interval: float = REFRESH_SECONDS, miss_reload_interval: float = MISS_RELOAD_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._encryptor = encryptor
        self._retention = retention
        self._refresh_interval = refresh_interval
        self._miss_reload_interval = miss_reload_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._last_miss_reload = float("-inf")

    def ensure_key(self) -> None:
        """Generate the first signing key when there is none (first start)."""
        with self._db.session() as session:
            if current_key(session) is None:
                generate_key(session, self._encryptor, self._retention)
        self.reload()

    @property
    def retention(self) -> int:
        """Seconds a retired key stays published, so tokens it signed keep verifying."""
        return self._retention

    def rotate(self, also: Callable[[Session, str], None] | None = None) -> str:
        """Make a new signing key; ``also(session, kid)`` runs in the same transaction (its audit event)."""
        with self._db.session() as session:
            kid = generate_key(session, self._encryptor, self._retention).kid
            if also is not None:
                also(session, kid)
        self.reload()
        return kid

    def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None:
            self.ensure_key()
            snap = self._snapshot
            assert snap is not None
        elif self._clock() - snap.loaded_at > self._refresh_interval:
            snap = self.reload(only_if_stale=True)
        return snap

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The published key ``kid``, for verifying a token we signed; None when there is none.

        A kid missing from the snapshot may be a key another node made a moment ago: the ring
        re-reads the table at once, at most once per ``miss_reload_interval`` (see the module
        docstring). Blocking (a database read): call it off the event loop, as every verifier does.
        """
        snap = self.snapshot()
        key = snap.public_keys.get(kid)
        if key is not None or not kid:
            return key
        asked_at = self._clock()
        with self._lock:
            current = self._snapshot
            if current is not None and current.loaded_at > asked_at:
                return current.public_keys.get(kid)  # someone re-read while this request waited
            if asked_at - self._last_miss_reload < self._miss_reload_interval:
                return None if current is None else current.public_keys.get(kid)
            self._last_miss_reload = asked_at
            return self._load().public_keys.get(kid)

    async def fresh(self) -> Snapshot:
        """``snapshot()`` for async code: from memory, or (every ``refresh_interval``) read in a thread."""
        if self.is_fresh():
            assert self._snapshot is not None
            return self._snapshot
        return await run_in_threadpool(self.snapshot)

    def is_fresh(self) -> bool:
        snap = self._snapshot
        return snap is not None and self._clock() - snap.loaded_at <= self._refresh_interval

    def reload(self, only_if_stale: bool = False) -> Snapshot:
        with self._lock:
            # Requests that waited for the lock find the snapshot the first one loaded.
            current = self._snapshot
            if only_if_stale and current is not None and self._clock() - current.loaded_at <= self._refresh_interval:
                return current
            return self._load()

    def _load(self) -> Snapshot:
        started = self._clock()  # the snapshot is as old as the start of its read
        with self._db.read_session() as session:
            keys = published_keys(session)
            current = next((k for k in keys if k.retired_at is None), None)
            if current is None:
                raise RuntimeError("no current signing key: run `authserver db upgrade` and start the server")
            signing = self._decrypt(current) if (
                self._snapshot is None or self._snapshot.signing.kid != current.kid) else self._snapshot.signing
            jwks = {"keys": [k.public_jwk for k in keys]}
            public = {k.kid: ec.EllipticCurvePublicNumbers(
                int.from_bytes(base64.urlsafe_b64decode(k.public_jwk["x"] + "=="), "big"),
                int.from_bytes(base64.urlsafe_b64decode(k.public_jwk["y"] + "=="), "big"),
                ec.SECP256R1()).public_key() for k in keys}
            snap = Snapshot(signing, jwks, json.dumps(jwks, separators=(",", ":")).encode(), public, started)
            self._snapshot = snap
            return snap

    def _decrypt(self, key: SigningKey) -> ActiveKey:
        pem = self._encryptor.decrypt(key.private_key_encrypted, key.kid.encode())
        private = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return ActiveKey(key.kid, key.alg, private)
