"""The authorization server's signing keys (JWKS), cached and refreshed with care.

Keys are fetched on first use, kept for the ``Cache-Control: max-age`` the server
sent (bounded below by the refetch interval and above by ``max_ttl``, so a removed
key stops being trusted within the hour whatever the header says), and refetched
early when a token names a kid we do not know: that is how a rotation is picked up
at once. That early refetch is what an attacker can trigger at will by spraying
random kids, so all fetches share one rate limit: at most one per
``refetch_interval`` seconds, concurrent callers wait on the same fetch. When a
refresh fails the previous keys stay in use (an outage of the authorization server
must not take every resource server down with it).

Only asymmetric keys whose type fits the token's ``alg`` are ever returned;
``oct`` (shared-secret) keys in a JWKS are ignored, which closes the door on
HMAC-with-the-public-key confusion even before the algorithm allow-list does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt

from authserver.resource._http import Fetcher
from authserver.resource.discovery import AuthServerMetadata
from authserver.resource.errors import AuthServerUnavailableError, InvalidTokenError

log = logging.getLogger("authserver.resource")

MAX_KEYS = 64

# alg → (kty, allowed crv values or None for "no crv")
KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}


def _usable(jwk: Any) -> bool:
    return (isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) and bool(jwk["kid"])
            and jwk.get("kty") in ("EC", "RSA", "OKP") and jwk.get("use", "sig") == "sig")


class JwksCache:
    def __init__(self, fetcher: Fetcher, metadata: AuthServerMetadata, *, jwks_uri: str | None,
                 refetch_interval: float, default_ttl: float, max_ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetcher = fetcher
        self._metadata = metadata
        self._jwks_uri = jwks_uri
        self._refetch_interval = refetch_interval
        self._default_ttl = default_ttl
        self._max_ttl = max(max_ttl, refetch_interval)
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] | None = None
        self._objects: dict[tuple[str, str], Any] = {}
        self._expires = float("-inf")
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str, alg: str) -> Any | None:
        """The public key for ``kid`` usable with ``alg``; None when the kid is unknown.

        Raises ``InvalidTokenError`` when the key exists but does not fit ``alg``, and
        ``AuthServerUnavailableError`` when no key set could be loaded at all.
        """
        if self._keys is None or kid not in self._keys or self._clock() >= self._expires:
            await self._maybe_refresh(kid)
        jwk = (self._keys or {}).get(kid)
        return None if jwk is None else self._key_object(kid, jwk, alg)

    def _may_fetch(self) -> bool:
        return self._clock() - self._last_attempt >= self._refetch_interval

    async def _maybe_refresh(self, kid: str) -> None:
        if not self._may_fetch():
            if self._keys is None:
                raise AuthServerUnavailableError("signing keys are unavailable")
            return
        async with self._lock:
            # Whoever held the lock may just have fetched what we need.
            fresh = self._keys is not None and self._clock() < self._expires
            if (fresh and kid in (self._keys or {})) or not self._may_fetch():
                if self._keys is None:
                    raise AuthServerUnavailableError("signing keys are unavailable")
                return
            try:
                await self._refresh()
            except AuthServerUnavailableError as exc:
                if self._keys is None or kid not in self._keys:
                    raise
                log.warning("JWKS refresh failed, keeping the previous keys: %s", exc.description)

    async def _refresh(self) -> None:
        self._last_attempt = self._clock()
        uri = self._jwks_uri or await self._metadata.endpoint("jwks_uri")
        try:
            document, max_age = await self._fetcher.get_json(uri, "JWKS")
        except AuthServerUnavailableError:
            if self._jwks_uri is None:
                self._metadata.forget()
            raise
        raw = document.get("keys")
        if not isinstance(raw, list):
            raise AuthServerUnavailableError("JWKS has no keys array")
        keys: dict[str, dict[str, Any]] = {}
        for jwk in raw[:MAX_KEYS]:
            if _usable(jwk):
                keys.setdefault(jwk["kid"], jwk)
        if not keys:
            raise AuthServerUnavailableError("JWKS has no usable signing keys")
        ttl = self._default_ttl if max_age is None else max_age
        self._keys = keys
        self._objects = {}
        self._expires = self._clock() + min(max(ttl, self._refetch_interval), self._max_ttl)

    def _key_object(self, kid: str, jwk: dict[str, Any], alg: str) -> Any:
        cached = self._objects.get((kid, alg))
        if cached is not None:
            return cached
        kty, curves = KEY_TYPES[alg]
        if jwk.get("kty") != kty or (curves is not None and jwk.get("crv") not in curves) or (
                "alg" in jwk and jwk["alg"] != alg):
            raise InvalidTokenError("the signing key does not match the token's algorithm")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("the signing key is unusable") from exc
        self._objects[(kid, alg)] = key
        return key
