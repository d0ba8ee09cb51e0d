"""DPoP proofs (RFC 9449 §4): checking one proof JWT, and RFC 7638 key thumbprints.

Pure functions of the proof, the request it came with and the clock: no storage, no
framework. Both ends use them: authserver's token endpoint (``authserver.dpop``, which adds
the shared replay store and server nonces) and this kit's resource-server side
(``DPoPVerifier`` below, which adds an in-process replay cache). The module needs only
``pyjwt[crypto]``, like the rest of the kit, so it can be vendored with it.

The checks of RFC 9449 §4.3, in an order that refuses junk before any signature math:

1. the proof is one compact JWS of bounded size, without ``crit``;
2. header ``typ`` is ``dpop+jwt`` (explicit typing keeps other JWTs out, §4.2);
3. ``alg`` is on an allow-list of asymmetric algorithms; ``none`` and ``HS*`` can never be
   configured (``SUPPORTED_ALGORITHMS``);
4. ``jwk`` is a public key of the type ``alg`` needs (EC P-256 for ES256, RSA of at least
   2048 bits, Ed25519) and carries no private member (``d``, ``p``, ``q``, ``k``…);
5. the signature verifies with that key;
6. ``jti`` (bounded length), ``htm`` equal to the request method, ``htu`` equal to the
   request URI ignoring query and fragment, after syntax-based normalisation (§4.3 point 9:
   case of scheme and host, default port, empty path), ``iat`` inside the accepted window;
7. with an access token, ``ath`` equals base64url(SHA-256(token)) (§4.3 point 11, §7).

Nonces and replay are left to the caller, which knows where state may live.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authserver.resource.errors import InvalidDPoPProofError, InvalidTokenError, UseDPoPNonceError

PROOF_TYPE = "dpop+jwt"
# Asymmetric only, by construction: there is no way to configure none or an HMAC.
SUPPORTED_ALGORITHMS = ("ES256", "ES384", "PS256", "RS256", "EdDSA")
DEFAULT_ALGORITHMS = SUPPORTED_ALGORITHMS
MAX_PROOF_LENGTH = 8192
MAX_JTI_LENGTH = 256
MIN_RSA_BITS = 2048
# JWK members that only a private (or symmetric) key has.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 §3.2: the required members of each key type, the only ones the thumbprint hashes.
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
_KEY_RULES: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "PS256": ("RSA", None), "RS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
}
DEFAULT_PORTS = {"http": 80, "https": 443}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members, sorted, no whitespace, base64url."""
    members = THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise InvalidDPoPProofError("the proof key is not a supported public key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of the SHA-256 of the token's ASCII."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def normalized_htu(url: str) -> str | None:
    """The URI as ``htu`` is compared (§4.3): no query or fragment, scheme and host lower-case,
    default port dropped, empty path as ``/``. None for anything that is no http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof that passed every stateless check."""

    jkt: str  # RFC 7638 thumbprint of its key
    jti: str
    iat: int
    nonce: str | None


def _public_key(jwk: Any, alg: str) -> Any:
    if not isinstance(jwk, dict):
        raise InvalidDPoPProofError("the proof has no jwk header")
    if PRIVATE_MEMBERS & jwk.keys():
        raise InvalidDPoPProofError("the proof's jwk must be a public key")
    kty, crv = _KEY_RULES[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise InvalidDPoPProofError("the proof's jwk does not fit its alg")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise InvalidDPoPProofError("the proof's jwk is not a valid key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidDPoPProofError("the proof's RSA key is too short")
    elif not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise InvalidDPoPProofError("the proof's jwk must be a public key")
    return key


def check_proof(proof: str, *, method: str, url: str, now: float, max_age: int, skew: int,
                algorithms: Sequence[str] = DEFAULT_ALGORITHMS, access_token: str | None = None) -> Proof:
    """The proof, if every stateless rule of §4.3 holds; else ``InvalidDPoPProofError``.

    ``url`` is the request's URI as the server is known publicly (its configured URL, not a
    Host header). ``iat`` must lie in ``[now - max_age, now + skew]``. With ``access_token``
    (a protected-resource request), ``ath`` must match it.
    """
    if not isinstance(proof, str) or len(proof) > MAX_PROOF_LENGTH or not proof.isascii() or proof.count(".") != 2:
        raise InvalidDPoPProofError("the DPoP proof is not a compact JWS")
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.PyJWTError:
        raise InvalidDPoPProofError("the DPoP proof is malformed") from None
    if header.get("typ") != PROOF_TYPE:
        raise InvalidDPoPProofError("the DPoP proof's typ must be dpop+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in _KEY_RULES:
        raise InvalidDPoPProofError("the DPoP proof's alg is not supported")
    if "crit" in header:
        raise InvalidDPoPProofError("the DPoP proof has unsupported critical header parameters")
    jwk = header.get("jwk")
    key = _public_key(jwk, alg)
    assert isinstance(jwk, dict)  # _public_key refused anything else
    try:
        payload = jwt.api_jws.PyJWS().decode(proof, key, algorithms=[alg])
        claims = json.loads(payload)
    except (jwt.PyJWTError, ValueError):
        raise InvalidDPoPProofError("the DPoP proof's signature is invalid") from None
    if not isinstance(claims, dict):
        raise InvalidDPoPProofError("the DPoP proof is malformed")
    jti, htm, htu, iat = (claims.get(k) for k in ("jti", "htm", "htu", "iat"))
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise InvalidDPoPProofError("the DPoP proof needs a jti of at most 256 characters")
    if htm != method:
        raise InvalidDPoPProofError("the DPoP proof's htm does not match the request method")
    expected = normalized_htu(url)
    if not isinstance(htu, str) or expected is None or normalized_htu(htu) != expected:
        raise InvalidDPoPProofError("the DPoP proof's htu does not match the request URI")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise InvalidDPoPProofError("the DPoP proof needs an integer iat")
    if iat < now - max_age:
        raise InvalidDPoPProofError("the DPoP proof is too old (iat)")
    if iat > now + skew:
        raise InvalidDPoPProofError("the DPoP proof is issued in the future (iat)")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(ath, access_token_hash(access_token)):
            raise InvalidDPoPProofError("the DPoP proof's ath does not match the access token")
    nonce = claims.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise InvalidDPoPProofError("the DPoP proof's nonce is malformed")
    return Proof(jkt=thumbprint(jwk), jti=jti, iat=iat, nonce=nonce)


def bound_jkt(claims: Mapping[str, Any]) -> str | None:
    """The ``cnf.jkt`` of a token's claims (RFC 9449 §6), or None for a bearer token."""
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise InvalidTokenError("token has a malformed cnf claim")
    return jkt


class StatelessNonces:
    """Server nonces (RFC 9449 §8, §9) that need no storage: an HMAC of a time bucket.

    A nonce is valid in the bucket it was made in and the next one, so it lives between
    ``period`` and twice that, and every node with the same ``secret`` accepts it.
    """

    def __init__(self, secret: bytes, period: int, *, clock: Callable[[], float] = time.time) -> None:
        if period < 1:
            raise ValueError("the nonce period must be at least one second")
        self._key = hmac.new(secret, b"dpop-nonce", hashlib.sha256).digest()
        self.period = period
        self._clock = clock
        self._made: tuple[int, str] = (-1, "")

    def _for(self, bucket: int) -> str:
        return b64url(hmac.new(self._key, bucket.to_bytes(8, "big", signed=True), hashlib.sha256).digest()[:18])

    def current(self) -> str:
        bucket = int(self._clock() // self.period)
        if self._made[0] != bucket:
            self._made = (bucket, self._for(bucket))
        return self._made[1]

    def valid(self, nonce: str | None) -> bool:
        if not nonce or len(nonce) > 64:
            return False
        bucket = int(self._clock() // self.period)
        return any(hmac.compare_digest(nonce, self._for(b)) for b in (bucket, bucket - 1))


class ReplayCache:
    """Proof ``jti`` values seen by this process, each kept until its proof would be too old anyway.

    Bounded: past ``max_entries`` the expired entries go first, then the oldest. Entries are
    kept in arrival order and share one lifetime, so the oldest is also the first to expire.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: str, expires_at: float, now: float) -> bool:
        """True the first time ``key`` is seen (before it expires), False for a replay."""
        with self._lock:
            known = self._seen.get(key)
            if known is not None and known > now:
                return False
            while self._seen:
                oldest_key, oldest_expiry = next(iter(self._seen.items()))
                if oldest_expiry > now and len(self._seen) < self.max_entries:
                    break
                del self._seen[oldest_key]
            self._seen.pop(key, None)
            self._seen[key] = expires_at
            return True

    def __len__(self) -> int:
        return len(self._seen)


class DPoPVerifier:
    """The resource server's side of DPoP (RFC 9449 §7): a proof for each request with a bound token.

    Replay of a proof's ``jti`` is caught by an in-process, bounded cache (``ReplayCache``):
    the kit has no database. Behind several resource-server processes a proof could be
    replayed once to each other process within its ``max_age``; the proof is still bound to
    the request's method, URI and access token, and a server that must rule that out sets a
    ``nonce_secret`` (every process then accepts only its own recent nonces, RFC 9449 §9) or
    shares a replay store of its own.
    """

    def __init__(self, *, algorithms: Sequence[str] = DEFAULT_ALGORITHMS, max_age: int = 60, skew: int = 5,
                 nonce_secret: bytes | None = None, nonce_period: int = 300, max_replay_entries: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        bad = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if bad or not algorithms:
            raise ValueError(f"DPoP algorithms must be among {list(SUPPORTED_ALGORITHMS)}; not allowed: {bad}")
        if not 1 <= max_age <= 600 or not 0 <= skew <= 60:
            raise ValueError("max_age must be 1..600 seconds and skew 0..60 seconds")
        self.algorithms = tuple(algorithms)
        self.max_age = max_age
        self.skew = skew
        self.nonces = StatelessNonces(nonce_secret, nonce_period, clock=clock) if nonce_secret else None
        self.replays = ReplayCache(max_replay_entries)
        self._clock = clock

    def check(self, proof: str, *, method: str, url: str, access_token: str, jkt: str) -> Proof:
        now = self._clock()
        checked = check_proof(proof, method=method, url=url, now=now, max_age=self.max_age, skew=self.skew,
                              algorithms=self.algorithms, access_token=access_token)
        if not hmac.compare_digest(checked.jkt, jkt):
            raise InvalidDPoPProofError("the DPoP proof's key is not the one the token is bound to")
        if self.nonces is not None and not self.nonces.valid(checked.nonce):
            raise UseDPoPNonceError("a fresh DPoP nonce is required", nonce=self.nonces.current())
        if not self.replays.claim(f"{checked.jkt}\0{checked.jti}", checked.iat + self.max_age + 1, now):
            raise InvalidDPoPProofError("the DPoP proof was already used")
        return checked
