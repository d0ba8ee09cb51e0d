"""A client's public keys for ``private_key_jwt``: the rules a JWK Set must meet, and ``jwks_uri`` fetching.

What a client may register (``check_public_jwks``): a JSON object with ``keys``, 1 to ``MAX_KEYS``
asymmetric *public* keys of a type our algorithms use (RSA of at least 2048 bits, EC P-256, OKP
Ed25519/Ed448), ``use`` ``sig`` if given, distinct ``kid`` values, ``MAX_JWKS_BYTES`` at most. A
key carrying private members (``d``, ``p``, ``q``…) is refused outright rather than stripped: a
client that sends its private key has leaked it and must be told, and ``oct`` (shared secret)
keys would reopen HMAC-with-a-public-key confusion.

``jwks_uri`` fetching (``JwksFetcher``) goes through the SSRF guard (``safehttp``), like metadata
documents. Each URI's keys are kept for the ``Cache-Control: max-age`` its server sent, bounded
to ``MIN_TTL``..``MAX_TTL`` (``DEFAULT_TTL`` without one). An assertion naming a ``kid`` we do not
hold triggers one re-fetch (that is how a client's key rotation is picked up at once), but at
most one per URI every ``REFETCH_INTERVAL`` seconds whatever the kids sprayed at us, concurrent
callers share one fetch, and at most ``MAX_CONCURRENT_FETCHES`` URIs are fetched at once. A failed
re-fetch keeps the keys we had. Callers run ``get`` in a thread, never inside a transaction.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from authserver.safehttp import FetchError, GuardedHTTP, parse_target

log = logging.getLogger("authserver.clients.jwks")

MAX_KEYS = 10
MAX_JWKS_BYTES = 16 * 1024
MIN_RSA_BITS = 2048
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
SUBJECT = "the client's JWK Set"
MIN_TTL, DEFAULT_TTL, MAX_TTL = 60, 300, 3600
REFETCH_INTERVAL = 10.0
NEGATIVE_TTL = 30.0
MAX_CONCURRENT_FETCHES = 8
MAX_CACHE_ENTRIES = 10_000
FETCH_TIMEOUT = 5.0

# alg → (kty, curves or None): which keys an algorithm may use.
KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    "ES256": ("EC", frozenset({"P-256"})),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
ALGORITHMS = tuple(KEY_TYPES)
CURVES = {"EC": frozenset({"P-256"}), "OKP": frozenset({"Ed25519", "Ed448"})}


class JwksError(ValueError):
    """The JWK Set is not acceptable; the message says why in words safe to show."""


def check_public_jwks(jwks: Any) -> dict[str, Any]:
    """``jwks`` if it is a JWK Set of public signing keys we can use (see the module docstring)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise JwksError("jwks must be a JSON Web Key Set: an object with a keys array")
    keys = jwks["keys"]
    if not 1 <= len(keys) <= MAX_KEYS:
        raise JwksError(f"jwks must hold between 1 and {MAX_KEYS} keys")
    try:
        size = len(json.dumps(jwks, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        raise JwksError("jwks is not JSON") from None
    if size > MAX_JWKS_BYTES:
        raise JwksError(f"jwks is larger than {MAX_JWKS_BYTES} bytes")
    kids: set[str] = set()
    for key in keys:
        if not isinstance(key, dict):
            raise JwksError("each key in jwks must be an object")
        private = sorted(PRIVATE_MEMBERS & set(key))
        if private:
            raise JwksError(f"jwks must hold public keys only; a key has the private member {private[0]!r} "
                            "(treat that private key as compromised)")
        kty = key.get("kty")
        if kty not in ("RSA", "EC", "OKP"):
            raise JwksError(f"unsupported key type {kty!r} in jwks (use RSA, EC P-256 or OKP Ed25519)")
        if kty in CURVES and key.get("crv") not in CURVES[kty]:
            raise JwksError(f"unsupported curve {key.get('crv')!r} in jwks")
        if key.get("use", "sig") != "sig":
            raise JwksError("keys in jwks must be signing keys (use sig)")
        if "alg" in key and key["alg"] not in ALGORITHMS:
            raise JwksError(f"unsupported alg {key['alg']!r} in jwks (one of: {', '.join(ALGORITHMS)})")
        kid = key.get("kid")
        if kid is not None:
            if not isinstance(kid, str) or not 0 < len(kid) <= 256:
                raise JwksError("a kid in jwks must be a non-empty string")
            if kid in kids:
                raise JwksError(f"kid {kid!r} appears twice in jwks")
            kids.add(kid)
        try:
            loaded = jwt.PyJWK(key).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise JwksError("a key in jwks is not a valid JSON Web Key") from None
        if kty == "RSA" and getattr(loaded, "key_size", 0) < MIN_RSA_BITS:
            raise JwksError(f"RSA keys in jwks must have at least {MIN_RSA_BITS} bits")
    if len(keys) > 1 and len(kids) != len(keys):
        raise JwksError("every key needs a kid when jwks holds several")
    return jwks


def check_jwks_uri(uri: Any, *, allow_loopback_http: bool = False) -> str:
    if not isinstance(uri, str) or parse_target(uri, allow_loopback_http=allow_loopback_http) is None:
        raise JwksError("jwks_uri must be an https URL" + (" (or http on a loopback host)" if allow_loopback_http
                                                           else ""))
    return uri


def select_key(jwks: dict[str, Any], kid: str | None, alg: str) -> Any | None:
    """The key object of ``jwks`` that ``kid`` names and ``alg`` may use; None when there is none.

    Without a ``kid`` only a set holding exactly one usable key answers: guessing among several
    would make the key choice the attacker's."""
    kty, curves = KEY_TYPES[alg]
    usable = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kty") == kty
              and (curves is None or k.get("crv") in curves) and k.get("alg", alg) == alg
              and k.get("use", "sig") == "sig" and not PRIVATE_MEMBERS & set(k)]
    if kid is not None:
        usable = [k for k in usable if k.get("kid") == kid]
    if len(usable) != 1:
        return None
    try:
        return jwt.PyJWK(usable[0], algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None


def has_kid(jwks: dict[str, Any], kid: str | None) -> bool:
    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)]
    return len(keys) == 1 if kid is None else any(k.get("kid") == kid for k in keys)


def _max_age(cache_control: str) -> int:
    ttl = DEFAULT_TTL
    for item in cache_control.split(","):
        name, _, value = item.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return MIN_TTL
        if name == "max-age" and value.strip().strip('"').isdigit():
            ttl = int(value.strip().strip('"'))
    return max(MIN_TTL, min(MAX_TTL, ttl))


@dataclass
class _Entry:
    jwks: dict[str, Any] | None
    expires_at: float
    fetched_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksFetcher:
    """``jwks_uri`` keys, cached per URI (see the module docstring). Thread-safe."""

    def __init__(self, *, allow_loopback_http: bool = False, clock: Callable[[], float] = time.monotonic,
                 http: GuardedHTTP | None = None) -> None:
        self._http = http or GuardedHTTP(allow_loopback_http=allow_loopback_http, max_bytes=MAX_JWKS_BYTES,
                                         timeout=FETCH_TIMEOUT, user_agent=b"authserver (client jwks fetcher)")
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_FETCHES)
        self.fetches = 0  # how many times the network was asked (tests and logs)

    def cached(self, uri: str, kid: str | None) -> dict[str, Any] | None:
        """The fresh cached set, if it holds ``kid``: the event loop's answer, no thread needed."""
        entry = self._entries.get(uri)
        if entry is None or entry.jwks is None or entry.expires_at <= self._clock() or not has_kid(entry.jwks, kid):
            return None
        return entry.jwks

    def get(self, uri: str, kid: str | None) -> dict[str, Any] | None:
        """The keys of ``uri``, fetched when missing or stale, re-fetched (bounded) when ``kid`` is unknown;
        None when the URI gives us nothing usable."""
        with self._lock:
            entry = self._entries.get(uri)
            if entry is None:
                if len(self._entries) >= MAX_CACHE_ENTRIES:
                    self._entries.pop(next(iter(self._entries)))
                entry = self._entries[uri] = _Entry(None, expires_at=0.0, fetched_at=-REFETCH_INTERVAL)
        with entry.lock:  # one fetch per URI at a time; the others wait for its result
            now = self._clock()
            fresh = entry.jwks is not None and entry.expires_at > now
            if fresh and has_kid(entry.jwks or {}, kid):
                return entry.jwks
            if now - entry.fetched_at < REFETCH_INTERVAL:
                return entry.jwks if entry.jwks is not None and entry.expires_at > now else None
            self._fetch(uri, entry)
            return entry.jwks

    def _fetch(self, uri: str, entry: _Entry) -> None:
        if not self._slots.acquire(blocking=False):
            log.info("jwks_uri %s not fetched: too many fetches in progress", uri)
            return
        try:
            self.fetches += 1
            entry.fetched_at = self._clock()
            document, head = self._http.get_json(uri, SUBJECT)
            entry.jwks = check_public_jwks(document)
            entry.expires_at = self._clock() + _max_age(head.get("cache-control"))
        except (FetchError, JwksError) as exc:
            detail = exc.detail if isinstance(exc, FetchError) else None
            log.info("jwks_uri %s refused: %s (%s)", uri, exc, detail or "-")
            if entry.jwks is None:
                entry.expires_at = self._clock() + NEGATIVE_TTL
            # else: keep the keys we had (their own expiry still applies)
        finally:
            self._slots.release()
