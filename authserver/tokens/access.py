"""RFC 9068 JWT access tokens: signed with the current ES256 key, audience-bound to one resource.

Header ``{"typ": "at+jwt", "alg": "ES256", "kid": …}``; claims ``iss sub aud client_id
scope exp iat nbf jti auth_time``, and ``amr`` (RFC 8176: how the person signed in, see
``mfa.totp``) when known. ``aud`` is a single string: the resource URI (RFC 8707).
"""

from __future__ import annotations

import base64
import functools
import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authserver.keys.ring import ALG, ActiveKey, KeyRing
from authserver.secrets import new_identifier

TOKEN_TYPE = "at+jwt"


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    jti: str
    expires_in: int
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AccessTokenInfo:
    """A valid access token we signed, whether it was taken back, and its person's username."""

    claims: dict[str, Any]
    revoked: bool
    username: str | None


def issue_access_token(keys: KeyRing, *, issuer: str, subject: str, audience: str, client_id: str,
                       scopes: list[str], ttl: int, now: int, auth_time: int | None = None,
                       extra: dict[str, Any] | None = None) -> IssuedAccessToken:
    signing = keys.snapshot().signing
    jti = new_identifier(16)
    claims: dict[str, Any] = {
        "iss": issuer, "sub": subject, "aud": audience, "client_id": client_id,
        "scope": " ".join(scopes), "iat": now, "nbf": now, "exp": now + ttl, "jti": jti,
    }
    if auth_time is not None:
        claims["auth_time"] = auth_time
    if extra:
        claims.update(extra)
    return IssuedAccessToken(_sign(signing, claims), jti, ttl, claims)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=16)
def _header(kid: str) -> bytes:
    return _b64(orjson.dumps({"alg": ALG, "kid": kid, "typ": TOKEN_TYPE}))


def _sign(signing: ActiveKey, claims: dict[str, Any]) -> str:
    """The JWS compact serialisation (RFC 7515 §7.1) of ``claims``, ES256 (RFC 7518 §3.4).

    Written out rather than ``jwt.encode``: on the token endpoint PyJWT's generic path (header
    merging, JSON encoder classes, algorithm lookup) costs as much as the signature itself. The
    header of each key is built once. Verification stays with PyJWT (``decode_access_token``).
    """
    signing_input = _header(signing.kid) + b"." + _b64(orjson.dumps(claims))
    r, s = decode_dss_signature(signing.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return (signing_input + b"." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))).decode()


def decode_access_token(keys: KeyRing, token: str, *, issuer: str, leeway: int = 0,
                        expired_for: int = 0) -> dict[str, Any] | None:
    """The claims of a token we signed and that is still valid, else None.

    Only ES256 with one of our published kids is accepted, so ``alg: none``, HMAC
    confusion and foreign keys all fail before any signature math. ``leeway`` is clock
    skew for every time claim; ``expired_for`` also accepts a token that expired at most
    that many seconds ago (a report about a call made while it was valid) without
    relaxing ``iat``/``nbf`` or anything else.

    A kid this process has not seen yet makes the key ring re-read the keys at once (rate-limited:
    ``KeyRing.public_key``), so a token signed by a node that already rotated verifies here too.
    Blocking: call it off the event loop.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    if header.get("alg") != ALG or header.get("typ") != TOKEN_TYPE:
        return None
    kid = header.get("kid")
    key = keys.public_key(kid) if isinstance(kid, str) else None
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
