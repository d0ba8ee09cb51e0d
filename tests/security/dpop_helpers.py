"""Client-side DPoP for tests: keys and proofs (RFC 9449 §4.2), made the way a real client makes them."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.conftest import ISSUER

TOKEN_URL = f"{ISSUER}/token"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(token: str) -> str:
    return b64url(hashlib.sha256(token.encode()).digest())


class DPoPKey:
    """A client's DPoP key pair; ``proof`` signs a proof for one request."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
        elif alg in ("RS256", "PS256"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(alg)
        algorithm = jwt.algorithms.get_default_algorithms()[alg]
        self.jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        self.private_jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private))

    @property
    def jkt(self) -> str:
        """RFC 7638 thumbprint, computed here independently of the server's code."""
        required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
        members = {k: self.jwk[k] for k in required[self.jwk["kty"]]}
        return b64url(hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest())

    def proof(self, *, htm: str = "POST", htu: str = TOKEN_URL, iat: int | None = None, jti: str | None = None,
              nonce: str | None = None, access_token: str | None = None, typ: str = "dpop+jwt",
              jwk: dict[str, Any] | None = None, claims: dict[str, Any] | None = None,
              omit: tuple[str, ...] = ()) -> str:
        payload: dict[str, Any] = {"jti": jti or secrets.token_urlsafe(16), "htm": htm, "htu": htu,
                                   "iat": int(time.time()) if iat is None else iat}
        if nonce is not None:
            payload["nonce"] = nonce
        if access_token is not None:
            payload["ath"] = ath(access_token)
        payload.update(claims or {})
        for name in omit:
            payload.pop(name, None)
        headers = {"typ": typ, "jwk": self.jwk if jwk is None else jwk}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=headers)


def unsigned_proof(key: DPoPKey, **claims: Any) -> str:
    """``alg: none``: a header and a payload, no signature."""
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk}
    payload = {"jti": secrets.token_urlsafe(16), "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time()), **claims}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}."


def hmac_proof(key: DPoPKey, secret: bytes = b"k" * 32) -> str:
    """``alg: HS256``, keyed with a shared secret (no proof of any private key)."""
    payload = {"jti": secrets.token_urlsafe(16), "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time())}
    return jwt.encode(payload, secret, algorithm="HS256", headers={"typ": "dpop+jwt", "jwk": key.jwk})


def tampered(proof: str) -> str:
    """The same proof with one claim changed after signing: the signature no longer matches."""
    header, payload, signature = proof.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["jti"] = claims["jti"] + "x"
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
