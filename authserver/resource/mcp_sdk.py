"""Adapter for the official MCP Python SDK (``mcp`` 2.x): authserver tokens in ``MCPServer``.

This is the only module of the kit that imports ``mcp``, so the core kit (verifier,
middleware, metadata) works in any ASGI app without the SDK installed.

The SDK wires auth from two things given to ``MCPServer``: a ``token_verifier``
(the ``mcp.server.auth.provider.TokenVerifier`` protocol, one async
``verify_token(token) -> AccessToken | None``) and ``auth=AuthSettings(...)``
(``mcp.server.auth.settings``). With both, ``streamable_http_app()`` answers
unauthenticated requests with 401 and a ``resource_metadata`` URL, checks
``required_scopes`` (403 ``insufficient_scope``), and serves the RFC 9728 document
at ``/.well-known/oauth-protected-resource/<path>``. ``McpTokenVerifier`` supplies
the verify step from ``BearerVerifier`` and reports the token's audience as
``AccessToken.resource``, so ``validate_token_resource=True`` (set by
``mcp_auth_settings``) double-checks it. Usage::

    from mcp.server.auth.middleware.auth_context import get_access_token
    from mcp.server.mcpserver import MCPServer

    from authserver.resource import BearerVerifier
    from authserver.resource.mcp_sdk import McpTokenVerifier, mcp_auth_settings

    verifier = BearerVerifier(issuer="https://auth.example.com", resource="https://mcp.example.com/mcp")
    server = MCPServer("calendar", token_verifier=McpTokenVerifier(verifier),
                       auth=mcp_auth_settings(verifier, required_scopes=["read:calendar"]))

    @server.tool()
    def whoami() -> str:
        token = get_access_token()
        return token.subject if token else "anonymous"

    app = server.streamable_http_app()  # MCP endpoint at /mcp; run with: uvicorn module:app

The SDK reads ``Authorization: Bearer`` only, so a DPoP-bound token (RFC 9449) is refused
here, as §7.2 requires of a bound token presented as a bearer token; to accept DPoP-bound
tokens, put ``BearerAuthMiddleware`` (which verifies the ``DPoP`` scheme and its proof) in
front of the SDK's app instead.

The SDK can only turn a failed check into 401, so an unreachable authorization
server (which ``BearerAuthMiddleware`` answers with 503) is logged and refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from authserver.resource.errors import AuthServerUnavailableError, BearerTokenError
from authserver.resource.verifier import BearerVerifier

log = logging.getLogger("authserver.resource")


class McpTokenVerifier:
    """``mcp.server.auth.provider.TokenVerifier`` backed by a ``BearerVerifier``."""

    def __init__(self, verifier: BearerVerifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            verified = await self.verifier.verify(token)
        except AuthServerUnavailableError as exc:
            log.warning("cannot verify bearer token: %s", exc.description)
            return None
        except BearerTokenError:
            return None
        return AccessToken(
            token=token, client_id=verified.client_id, scopes=list(verified.scopes),
            expires_at=verified.expires_at, resource=verified.audience, subject=verified.subject,
            claims=dict(verified.claims),
        )


def mcp_auth_settings(verifier: BearerVerifier, *, required_scopes: Sequence[str] | None = None,
                      service_documentation_url: str | None = None) -> AuthSettings:
    """``AuthSettings`` for a resource-server-only ``MCPServer`` trusting ``verifier``'s issuer."""
    return AuthSettings(
        issuer_url=verifier.issuer,  # type: ignore[arg-type]  # pydantic parses the str
        resource_server_url=verifier.resource,  # type: ignore[arg-type]
        required_scopes=list(required_scopes) if required_scopes is not None else None,
        service_documentation_url=service_documentation_url,  # type: ignore[arg-type]
        validate_token_resource=True,
    )
