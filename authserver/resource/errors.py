"""Why a bearer token was not accepted, as OAuth error codes the middleware can send on.

Two kinds of failure need different answers: a bad token is the client's problem
(401 ``invalid_token``, get a new token), while an unreachable authorization server
is ours (503, retry later) and must not push every client into re-authorising.
Descriptions are fixed strings written here, never echoes of token content, so they
are safe to put in a response.
"""

from __future__ import annotations


class BearerTokenError(Exception):
    """Base class: ``error`` is the OAuth error code, ``status_code`` the HTTP status to answer with."""

    error: str = "invalid_token"
    status_code: int = 401
    # Answered with a ``DPoP`` challenge (RFC 9449 §7.1) rather than a ``Bearer`` one.
    dpop: bool = False

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def __repr__(self) -> str:
        return f"{type(self).__name__}(error={self.error!r}, description={self.description!r})"


class InvalidTokenError(BearerTokenError):
    """RFC 6750 §3.1 ``invalid_token``: expired, revoked, malformed, or not for this resource."""

    error = "invalid_token"
    status_code = 401


class AuthServerUnavailableError(BearerTokenError):
    """The token could not be checked: metadata, JWKS or introspection endpoint unreachable or broken."""

    error = "temporarily_unavailable"
    status_code = 503


class DPoPSchemeError(InvalidTokenError):
    """``invalid_token`` under the DPoP scheme: a DPoP-bound token presented as a plain bearer
    token (RFC 9449 §7.2), or a bearer token presented with the DPoP scheme."""

    dpop = True


class InvalidDPoPProofError(BearerTokenError):
    """RFC 9449 §7.1 ``invalid_dpop_proof``: the DPoP proof is missing, malformed, replayed or
    does not fit the request, the access token or the token's key."""

    error = "invalid_dpop_proof"
    status_code = 401
    dpop = True


class UseDPoPNonceError(BearerTokenError):
    """RFC 9449 §9 ``use_dpop_nonce``: retry with the server nonce sent in ``DPoP-Nonce``."""

    error = "use_dpop_nonce"
    status_code = 401
    dpop = True

    def __init__(self, description: str, *, nonce: str) -> None:
        super().__init__(description)
        self.nonce = nonce
