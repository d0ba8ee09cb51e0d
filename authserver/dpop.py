"""DPoP at the token endpoint (RFC 9449 §4.3, §5, §8): proofs, nonces, replay, and who must send one.

The stateless rules of a proof (typ, alg, public jwk, signature, htm, htu, iat, ath) are
``authserver.resource.dpop.check_proof``, shared with the resource-server kit. Here they are
applied to the token endpoint, with:

* ``htu`` compared with the token endpoint URL as the issuer names it (``settings.endpoint``),
  never with a Host header, so a proof made for another server or endpoint is refused
  behind any proxy;
* ``iat`` accepted from ``AUTHSERVER_DPOP_PROOF_MAX_AGE`` seconds in the past (default 60,
  10..300) to ``AUTHSERVER_DPOP_CLOCK_SKEW`` in the future (default 5, 0..60): long enough for
  a slow network, short enough that a captured proof is useless soon;
* single use of each proof across every node: the ``jti`` is claimed in the shared database
  (``replay.claim``, kind ``dpop``, issuer = the key's thumbprint) until the proof would be
  too old anyway. That INSERT is the only cost DPoP adds to a token request, and a request
  without a ``DPoP`` header pays nothing (one scan of the raw headers);
* nonces (§8) that need no storage: an HMAC, under the server secret, of a time bucket of
  ``AUTHSERVER_DPOP_NONCE_SECONDS`` (default 300), valid in its bucket and the next, so every
  node accepts every node's nonces.

**Nonces are not required by default** (``AUTHSERVER_DPOP_NONCE_REQUIRED=false``). What a
nonce adds at the token endpoint is freshness that does not trust the client's clock: it stops
proofs made in advance (by code that briefly ran on the client) from being used later. Here
that window is already small: ``iat`` may be at most 5 s in the future and 60 s old, and each
proof works once, on every node. Requiring nonces would cost every DPoP client an extra
round trip (a 400 ``use_dpop_nonce``, then a retry) whenever its nonce is older than a bucket,
which for MCP clients that refresh every few minutes is most requests, and some client
libraries do not retry. An operator who wants the stronger guarantee turns it on; a proof that
carries a nonce is checked either way, and with nonces required every successful DPoP
response hands out the current nonce (``DPoP-Nonce``) so well-behaved clients rarely see the
error.

Errors: a bad proof is ``invalid_dpop_proof`` (§5), a missing or stale nonce
``use_dpop_nonce`` with a fresh ``DPoP-Nonce`` header (§8), both 400. A client registered
with ``dpop_bound_access_tokens`` (§5.2), or a public client when
``AUTHSERVER_DPOP_REQUIRED_FOR_PUBLIC_CLIENTS`` is set, that sends no proof gets
``invalid_request``: a required part of the request is missing (RFC 6749 §5.2; RFC 9449 names
no code for it). A proof with the wrong key for a bound refresh token or a code bound with
``dpop_jkt`` is ``invalid_grant`` (the grant does not belong to this key).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from authserver import replay
from authserver.clients.cache import ClientView
from authserver.clients.models import Client
from authserver.db import Database
from authserver.errors import InvalidDPoPProof, InvalidRequest, UseDPoPNonce
from authserver.resource.dpop import SUPPORTED_ALGORITHMS, InvalidDPoPProofError, Proof, StatelessNonces, check_proof
from authserver.settings import Settings

__all__ = ["SIGNING_ALGORITHMS", "Proof", "TokenEndpointProofs", "has_dpop_header", "require_proof_if_needed"]

# What ``dpop_signing_alg_values_supported`` advertises (RFC 9449 §5.1).
SIGNING_ALGORITHMS = list(SUPPORTED_ALGORITHMS)
HEADER = b"dpop"
REPLAY_KIND = "dpop"
DPOP_TOKEN_TYPE = "DPoP"


def has_dpop_header(request: Request) -> bool:
    """A scan of the raw headers: what a request without DPoP pays."""
    return any(name == HEADER for name, _ in request.scope["headers"])


class TokenEndpointProofs:
    """Checks the proofs sent to one app's token endpoint."""

    def __init__(self, settings: Settings, db: Database, secret: str) -> None:
        self.settings = settings
        self.db = db
        self.url = settings.endpoint("/token")
        self.nonces = StatelessNonces(secret.encode(), settings.dpop_nonce_seconds)

    async def check(self, request: Request) -> Proof:
        """The request's one valid, first-used proof; else ``invalid_dpop_proof`` or ``use_dpop_nonce``."""
        values = [value for name, value in request.scope["headers"] if name == HEADER]
        if len(values) != 1:
            raise InvalidDPoPProof("send exactly one DPoP header")
        settings = self.settings
        now = time.time()
        try:
            proof = check_proof(values[0].decode("latin-1"), method=request.method, url=self.url, now=now,
                                max_age=settings.dpop_proof_max_age, skew=settings.dpop_clock_skew)
        except InvalidDPoPProofError as exc:
            raise InvalidDPoPProof(exc.description) from None
        if (proof.nonce is not None or settings.dpop_nonce_required) and not self.nonces.valid(proof.nonce):
            raise UseDPoPNonce("the DPoP proof must carry the server's current nonce", nonce=self.nonces.current())
        expires_at = datetime.fromtimestamp(proof.iat + settings.dpop_proof_max_age + 1, UTC)
        if not await run_in_threadpool(replay.claim, self.db, REPLAY_KIND, proof.jkt, proof.jti, expires_at):
            raise InvalidDPoPProof("the DPoP proof was already used", detail=f"replayed jti of key {proof.jkt}")
        return proof

    def response_headers(self) -> dict[str, str]:
        """With nonces required, each DPoP answer hands out the current nonce (§8.2)."""
        return {"DPoP-Nonce": self.nonces.current()} if self.settings.dpop_nonce_required else {}


def require_proof_if_needed(settings: Settings, client: Client | ClientView, proof: Proof | None) -> None:
    """RFC 9449 §5.2 ``dpop_bound_access_tokens``, and the optional server-wide rule for public clients."""
    if proof is not None:
        return
    if client.dpop_bound_access_tokens:
        raise InvalidRequest("this client must send a DPoP proof with every token request",
                             detail="dpop_bound_access_tokens")
    if settings.dpop_required_for_public_clients and client.is_public:
        raise InvalidRequest("public clients must send a DPoP proof with every token request",
                             detail="AUTHSERVER_DPOP_REQUIRED_FOR_PUBLIC_CLIENTS")
