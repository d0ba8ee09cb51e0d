"""Verifying authserver access tokens on the resource server: the core of the kit.

A token is accepted only when every RFC 9068 rule holds, checked in an order that
rejects forgeries before any key lookup or signature math:

1. header ``typ`` is ``at+jwt`` (or ``application/at+jwt``), so an ID token or any
   other JWT from the same issuer cannot be replayed as an access token;
2. ``alg`` is on an allow-list of asymmetric algorithms (``ES256`` by default);
   ``none`` and ``HS*`` can never be configured, so neither the unsigned-token nor the
   HMAC-keyed-with-the-public-key attack has a way in;
3. ``kid`` names a key in the issuer's JWKS (see ``jwks.py`` for caching and the
   rate-limited refetch that picks up key rotation);
4. the signature, then ``iss`` (exact string), ``aud`` (this resource, RFC 8707),
   ``exp``/``nbf``/``iat`` with a small leeway, and the presence of ``sub``,
   ``client_id`` and ``jti``.

DPoP (RFC 9449 §7): ``verify`` is for the ``Bearer`` scheme and refuses a DPoP-bound token
(one with ``cnf.jkt``, §7.2: a stolen bound token must not work as a bearer token);
``verify_dpop`` is for the ``DPoP`` scheme: the token must be bound, and the request's proof
must be valid for this request (``htm``, ``htu``, ``iat``, ``ath``), made with the bound key and
not seen before (see ``dpop.DPoPVerifier`` for the replay cache and optional nonces). Both work
with local verification and with introspection (the authorization server reports ``cnf``).

Introspection (RFC 7662) is optional: ``"always"`` asks the authorization server
about every token (sees revocations at once, one round trip each); ``"fallback"``
asks only when the token cannot be judged locally — it is not a JWT (opaque), its
kid is unknown even after a refetch, or the keys are unreachable. A JWT that fails
a local check (bad signature, expired, wrong audience) is final either way: the
authorization server would only say the same, and asking would let anyone turn
junk tokens into load on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import jwt

from authserver.resource._http import DEFAULT_TIMEOUT, Fetcher, check_url
from authserver.resource.discovery import AuthServerMetadata
from authserver.resource.dpop import DPoPVerifier, bound_jkt
from authserver.resource.errors import (
    AuthServerUnavailableError,
    DPoPSchemeError,
    InvalidDPoPProofError,
    InvalidTokenError,
)
from authserver.resource.introspection import Introspector
from authserver.resource.jwks import KEY_TYPES, JwksCache

ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
ALLOWED_ALGORITHMS = frozenset(KEY_TYPES)
REQUIRED_CLAIMS = ("iss", "sub", "aud", "client_id", "exp", "iat", "jti")
MAX_TOKEN_LENGTH = 8192

IntrospectionMode = Literal["off", "fallback", "always"]


@dataclass(frozen=True)
class VerifiedToken:
    """What the resource server learns from a valid token.

    ``audience`` is this resource (the ``aud`` value that matched); ``claims`` holds
    everything else (``iss``, ``iat``, ``auth_time``, ``cnf``, …) for the rare caller
    that needs it.
    """

    subject: str
    client_id: str
    scopes: tuple[str, ...]
    audience: str
    expires_at: int
    jti: str | None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def has_scopes(self, *required: str) -> bool:
        return set(required) <= set(self.scopes)

    @property
    def jkt(self) -> str | None:
        """The DPoP key thumbprint the token is bound to (``cnf.jkt``, RFC 9449 §6), or None."""
        return bound_jkt(self.claims)


class _NotLocallyDecidable(InvalidTokenError):
    """Local checks cannot judge this token (opaque, or an unknown kid); introspection may."""


def _expected_audience(aud: Any, resource: str) -> bool:
    if isinstance(aud, str):
        return aud == resource
    return isinstance(aud, list) and resource in aud


def _jwt_failure(exc: jwt.PyJWTError) -> InvalidTokenError:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return InvalidTokenError("token has expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return InvalidTokenError("token is not valid yet")
    if isinstance(exc, jwt.InvalidAudienceError):
        return InvalidTokenError("token was not issued for this resource")
    if isinstance(exc, jwt.InvalidIssuerError):
        return InvalidTokenError("token was issued by another authorization server")
    if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim in REQUIRED_CLAIMS:
        return InvalidTokenError(f"token has no {exc.claim} claim")
    if isinstance(exc, jwt.InvalidSignatureError):
        return InvalidTokenError("token signature is invalid")
    return InvalidTokenError("token is malformed")


class BearerVerifier:
    """Verifies access tokens issued by one authserver issuer for one resource.

    Build it once per process (at import time is fine: nothing is fetched until the
    first ``verify``) and share it. ``verify`` returns a ``VerifiedToken`` or raises
    ``InvalidTokenError`` (401) / ``AuthServerUnavailableError`` (503).
    """

    def __init__(
        self,
        *,
        issuer: str,
        resource: str,
        jwks_uri: str | None = None,
        algorithms: Sequence[str] = ("ES256",),
        leeway: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        jwks_refetch_interval: float = 10.0,
        jwks_default_ttl: float = 300.0,
        jwks_max_ttl: float = 3600.0,
        introspection: IntrospectionMode = "off",
        introspection_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        dpop: DPoPVerifier | None = None,
    ) -> None:
        """``dpop``: how DPoP proofs are checked (algorithms, ``iat`` window, nonces); the defaults
        unless given."""
        self.dpop = dpop or DPoPVerifier()
        self.issuer = check_url(issuer, "issuer")
        self.resource = check_url(resource, "resource")
        bad = [a for a in algorithms if a not in ALLOWED_ALGORITHMS]
        if bad or not algorithms:
            raise ValueError(f"algorithms must be asymmetric JWS algorithms from {sorted(ALLOWED_ALGORITHMS)}; "
                             f"not allowed: {bad}")
        if leeway < 0 or leeway > 300:
            raise ValueError("leeway must be between 0 and 300 seconds")
        if introspection not in ("off", "fallback", "always"):
            raise ValueError("introspection must be 'off', 'fallback' or 'always'")
        if introspection != "off" and not (client_id and client_secret):
            raise ValueError("introspection needs client_id and client_secret (client_secret_basic)")
        self.algorithms = tuple(algorithms)
        self.leeway = leeway
        self.introspection: IntrospectionMode = introspection
        fetcher = Fetcher(http_client, timeout=timeout)
        self._metadata = AuthServerMetadata(self.issuer, fetcher, retry_interval=jwks_refetch_interval, clock=clock)
        self._jwks = JwksCache(
            fetcher, self._metadata, jwks_uri=check_url(jwks_uri, "jwks_uri") if jwks_uri else None,
            refetch_interval=jwks_refetch_interval, default_ttl=jwks_default_ttl, max_ttl=jwks_max_ttl,
            clock=clock)
        self._introspector = Introspector(
            fetcher, self._metadata,
            endpoint=check_url(introspection_endpoint, "introspection_endpoint") if introspection_endpoint else None,
            client_id=client_id or "", client_secret=client_secret or "",
        ) if introspection != "off" else None

    def __repr__(self) -> str:
        return f"BearerVerifier(issuer={self.issuer!r}, resource={self.resource!r})"

    async def verify(self, token: str) -> VerifiedToken:
        """A token presented with the ``Bearer`` scheme; a DPoP-bound one is refused (RFC 9449 §7.2)."""
        verified = await self._verify_token(token)
        if verified.jkt is not None:
            raise DPoPSchemeError("this token is DPoP-bound: present it with the DPoP scheme and a proof")
        return verified

    async def verify_dpop(self, token: str, proof: str | None, *, method: str, url: str) -> VerifiedToken:
        """A token presented with the ``DPoP`` scheme and the request's ``DPoP`` proof header.

        ``url`` is the request's URI as clients address it (the public URL, scheme and host
        included; query and fragment are ignored).
        """
        verified = await self._verify_token(token)
        jkt = verified.jkt
        if jkt is None:
            raise DPoPSchemeError("this token is not DPoP-bound: present it with the Bearer scheme")
        if proof is None:
            raise InvalidDPoPProofError("a DPoP proof is required with a DPoP-bound token")
        self.dpop.check(proof, method=method, url=url, access_token=token, jkt=jkt)
        return verified

    async def _verify_token(self, token: str) -> VerifiedToken:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise InvalidTokenError("token is malformed")
        if self._introspector is not None and self.introspection == "always":
            return await self._introspect(token)
        try:
            return await self._verify_jwt(token)
        except (_NotLocallyDecidable, AuthServerUnavailableError) as exc:
            if self._introspector is None:
                if isinstance(exc, _NotLocallyDecidable):
                    raise InvalidTokenError(exc.description) from None
                raise
            return await self._introspect(token)

    async def _verify_jwt(self, token: str) -> VerifiedToken:
        if token.count(".") != 2:
            raise _NotLocallyDecidable("token is not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _NotLocallyDecidable("token is not a JWT") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("token is not a JWT access token (typ must be at+jwt)")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidTokenError("token algorithm is not allowed")
        if "crit" in header:
            raise InvalidTokenError("token has unsupported critical header parameters")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("token has no key id")
        key = await self._jwks.key(kid, alg)
        if key is None:
            raise _NotLocallyDecidable("token was signed with an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], issuer=self.issuer, audience=self.resource, leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise _jwt_failure(exc) from None
        return self._to_token(claims)

    async def _introspect(self, token: str) -> VerifiedToken:
        assert self._introspector is not None
        claims = await self._introspector.introspect(token)
        token_type = claims.get("token_type")
        if token_type is not None and str(token_type).lower() not in ("bearer", "access_token", "dpop"):
            # A refresh token is active too, but it is not a credential for calling this server.
            raise InvalidTokenError("token is not an access token")
        if not _expected_audience(claims.get("aud"), self.resource):
            raise InvalidTokenError("token was not issued for this resource")
        if "iss" in claims and claims["iss"] != self.issuer:
            raise InvalidTokenError("token was issued by another authorization server")
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise InvalidTokenError("token has no exp claim")
        if exp <= now - self.leeway:
            raise InvalidTokenError("token has expired")
        if isinstance(nbf, int) and nbf > now + self.leeway:
            raise InvalidTokenError("token is not valid yet")
        return self._to_token(claims)

    def _to_token(self, claims: dict[str, Any]) -> VerifiedToken:
        subject, client_id, scope, jti = (claims.get(k) for k in ("sub", "client_id", "scope", "jti"))
        if not isinstance(subject, str) or not subject:
            raise InvalidTokenError("token has no sub claim")
        if not isinstance(client_id, str) or not client_id:
            raise InvalidTokenError("token has no client_id claim")
        if scope is None:
            scopes: tuple[str, ...] = ()
        elif isinstance(scope, str):
            scopes = tuple(dict.fromkeys(scope.split()))
        else:
            raise InvalidTokenError("token scope claim is malformed")
        return VerifiedToken(subject=subject, client_id=client_id, scopes=scopes, audience=self.resource,
                             expires_at=int(claims["exp"]), jti=jti if isinstance(jti, str) else None,
                             claims=claims)
