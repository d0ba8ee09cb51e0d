"""Resource-server kit: what an MCP server imports to trust tokens from authserver.

Needs only ``pyjwt[crypto]``, ``httpx`` and ``starlette``; nothing from the rest of
authserver (no FastAPI, no database), so it can be vendored into any ASGI app.
The MCP SDK adapter (``authserver.resource.mcp_sdk``) imports ``mcp`` only when used.

Protect your MCP server in 10 lines::

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from authserver.resource import BearerAuthMiddleware, BearerVerifier, protected_resource_routes

    verifier = BearerVerifier(issuer="https://auth.example.com", resource="https://mcp.example.com/mcp")

    async def mcp_endpoint(request):
        token = request.state.auth  # a VerifiedToken: subject, client_id, scopes, expires_at, …
        return JSONResponse({"user": token.subject, "scopes": list(token.scopes)})

    routes = [Route("/mcp", mcp_endpoint, methods=["POST"]),
              *protected_resource_routes(verifier.resource, verifier.issuer, scopes_supported=["mcp:tools"])]
    app = BearerAuthMiddleware(Starlette(routes=routes), verifier, required_scopes=["mcp:tools"])

Requests without a valid token get 401 with
``WWW-Authenticate: Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
scope="mcp:tools"``; the metadata document is served there (and at the host-level
well-known URL) without a token. With the official SDK, see ``authserver.resource.mcp_sdk``.
To show people which tools ran under their grant (opt-in), see ``authserver.resource.reporting``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authserver.resource.discovery import authorization_server_metadata_url
from authserver.resource.errors import AuthServerUnavailableError, BearerTokenError, InvalidTokenError
from authserver.resource.metadata import (
    WELL_KNOWN,
    metadata_endpoint,
    metadata_paths,
    protected_resource_metadata,
    protected_resource_routes,
    resource_metadata_url,
)
from authserver.resource.middleware import BearerAuthMiddleware
from authserver.resource.reporting import ToolCallReporter, ToolCallReportMiddleware
from authserver.resource.verifier import BearerVerifier, IntrospectionMode, VerifiedToken

if TYPE_CHECKING:
    from authserver.resource.mcp_sdk import McpTokenVerifier, mcp_auth_settings

__all__ = [
    "WELL_KNOWN",
    "AuthServerUnavailableError",
    "BearerAuthMiddleware",
    "BearerTokenError",
    "BearerVerifier",
    "IntrospectionMode",
    "InvalidTokenError",
    "McpTokenVerifier",
    "ToolCallReportMiddleware",
    "ToolCallReporter",
    "VerifiedToken",
    "authorization_server_metadata_url",
    "mcp_auth_settings",
    "metadata_endpoint",
    "metadata_paths",
    "protected_resource_metadata",
    "protected_resource_routes",
    "resource_metadata_url",
]


def __getattr__(name: str) -> Any:
    """``McpTokenVerifier`` and ``mcp_auth_settings`` import the MCP SDK only when first used."""
    if name in ("McpTokenVerifier", "mcp_auth_settings"):
        from authserver.resource import mcp_sdk

        return getattr(mcp_sdk, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
