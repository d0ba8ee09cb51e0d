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
