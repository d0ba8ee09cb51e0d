"""RFC 9728 protected resource metadata: how an MCP client finds our authorization server.

An MCP client that gets a 401 reads ``resource_metadata`` from ``WWW-Authenticate``
(or tries the well-known URLs), and learns from this document which authorization
server to use and which scopes exist. RFC 9728 §3.1 puts the document at the
well-known path inserted *before* the resource's path
(``https://mcp.example.com/mcp`` → ``/.well-known/oauth-protected-resource/mcp``);
MCP clients also try the host-level URL, so both are served with the same
content. Browser-based clients read it cross-origin, hence
``Access-Control-Allow-Origin: *`` (the document is public by design).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from authserver.resource._http import check_url

WELL_KNOWN = "/.well-known/oauth-protected-resource"
CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
CACHE_CONTROL = "public, max-age=3600"


def _resource_path(resource: str) -> str:
    return urlsplit(resource).path.rstrip("/")


def resource_metadata_url(resource: str) -> str:
    """Where the metadata for ``resource`` lives (RFC 9728 §3.1), for the ``WWW-Authenticate`` header.

    ``https://mcp.example.com/mcp`` → ``https://mcp.example.com/.well-known/oauth-protected-resource/mcp``.
    """
    parts = urlsplit(resource)
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{_resource_path(resource)}{query}"


def metadata_paths(resource: str) -> list[str]:
    """The paths to serve the document on: the path-inserted one first, then the host-level one."""
    path = _resource_path(resource)
    return [f"{WELL_KNOWN}{path}", WELL_KNOWN] if path else [WELL_KNOWN]


def protected_resource_metadata(
    resource: str,
    authorization_servers: str | Sequence[str],
    *,
    scopes_supported: Sequence[str] | None = None,
    resource_name: str | None = None,
    resource_documentation: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The RFC 9728 document. ``authorization_servers`` is the issuer (or issuers) exactly as configured."""
    check_url(resource, "resource")
    servers = [authorization_servers] if isinstance(authorization_servers, str) else list(authorization_servers)
    if not servers:
        raise ValueError("at least one authorization server is required")
    document: dict[str, Any] = {"resource": resource, "authorization_servers": servers}
    if scopes_supported is not None:
        document["scopes_supported"] = list(scopes_supported)
    document["bearer_methods_supported"] = ["header"]
    if resource_name is not None:
        document["resource_name"] = resource_name
    if resource_documentation is not None:
        document["resource_documentation"] = resource_documentation
    if extra:
        document.update(extra)
    return document


def metadata_endpoint(document: Mapping[str, Any]) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint answering GET/HEAD with ``document`` and CORS preflights with 204."""
    body = json.dumps(document, separators=(",", ":")).encode()

    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={
                **CORS_HEADERS, "Access-Control-Allow-Methods": "GET, OPTIONS",
                "Access-Control-Allow-Headers": "*", "Access-Control-Max-Age": "86400"})
        return Response(body, media_type="application/json",
                        headers={**CORS_HEADERS, "Cache-Control": CACHE_CONTROL})

    return endpoint


def protected_resource_routes(
    resource: str,
    authorization_servers: str | Sequence[str],
    *,
    scopes_supported: Sequence[str] | None = None,
    resource_name: str | None = None,
    resource_documentation: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Route]:
    """Starlette routes serving the document at every URL clients try; add them to your app's routes."""
    document = protected_resource_metadata(
        resource, authorization_servers, scopes_supported=scopes_supported, resource_name=resource_name,
        resource_documentation=resource_documentation, extra=extra)
    endpoint = metadata_endpoint(document)
    return [Route(path, endpoint, methods=["GET", "HEAD", "OPTIONS"], include_in_schema=False)
            for path in metadata_paths(resource)]
