"""RFC 9068 JWT access tokens: signed with the current ES256 key, audience-bound to one resource.

Header ``{"typ": "at+jwt", "alg": "ES256", "kid": …}``; claims ``iss sub aud client_id
scope exp iat nbf jti auth_time``. ``aud`` is a single string: the resource URI (RFC 8707).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from authserver.keys.ring import ALG, KeyRing

TOKEN_TYPE = "at+jwt"


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    jti: str
    expires_in: int
    claims: dict[str, Any]


def issue_access_token(keys: KeyRing, *, issuer: str, subject: str, audience: str, client_id: str,
                       scopes: list[str], ttl: int, now: int, auth_time: int | None = None,
                       extra: dict[str, Any] | None = None) -> IssuedAccessToken:
    signing = keys.snapshot().signing
    jti = secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": issuer, "sub": subject, "aud": audience, "client_id": client_id,
        "scope": " ".join(scopes), "iat": now, "nbf": now, "exp": now + ttl, "jti": jti,
    }
    if auth_time is not None:
        claims["auth_time"] = auth_time
    if extra:
        claims.update(extra)
    token = jwt.encode(claims, signing.private_key, algorithm=ALG,
                       headers={"typ": TOKEN_TYPE, "kid": signing.kid})
    return IssuedAccessToken(token, jti, ttl, claims)


def decode_access_token(keys: KeyRing, token: str, *, issuer: str, leeway: int = 0,
                        expired_for: int = 0) -> dict[str, Any] | None:
    """The claims of a token we signed and that is still valid, else None.

    Only ES256 with one of our published kids is accepted, so ``alg: none``, HMAC
    confusion and foreign keys all fail before any signature math. ``leeway`` is clock
    skew for every time claim; ``expired_for`` also accepts a token that expired at most
    that many seconds ago (a report about a call made while it was valid) without
    relaxing ``iat``/``nbf`` or anything else.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    if header.get("alg") != ALG or header.get("typ") != TOKEN_TYPE:
        return None
    key = keys.snapshot().public_keys.get(header.get("kid", ""))
    if key is None:
        return None
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALG], issuer=issuer, leeway=leeway,
            options={"verify_aud": False, "verify_exp": expired_for == 0,
                     "require": ["exp", "iat", "iss", "sub", "aud", "jti", "client_id"]},
        )
    except jwt.PyJWTError:
        return None
    if expired_for:
        exp = claims["exp"]
        if not isinstance(exp, int) or isinstance(exp, bool) or exp <= time.time() - leeway - expired_for:
            return None
    return claims
