"""Finding the authorization server's endpoints from its issuer (RFC 8414).

A resource server is configured with the issuer string only; the JWKS and
introspection URLs come from the issuer's metadata, so the operator can move them
without touching every MCP server. The document is accepted only when its
``issuer`` equals the configured issuer exactly (RFC 8414 §3.3), which stops a
mix-up where one server's metadata points at another's keys. It is cached for the
life of the process and forgotten when an endpoint it named stops working; failed
fetches are retried at most once per ``retry_interval`` so a dead authorization
server is not hammered by every incoming request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from authserver.resource._http import Fetcher, check_url
from authserver.resource.errors import AuthServerUnavailableError

WELL_KNOWN_AS = "/.well-known/oauth-authorization-server"


def authorization_server_metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.

    ``https://auth.example.com`` → ``https://auth.example.com/.well-known/oauth-authorization-server``;
    ``https://example.com/auth`` → ``https://example.com/.well-known/oauth-authorization-server/auth``.
    """
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN_AS}{parts.path.rstrip('/')}"


class AuthServerMetadata:
    """The issuer's RFC 8414 document, fetched on first use and cached."""

    def __init__(self, issuer: str, fetcher: Fetcher, *, retry_interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self.url = authorization_server_metadata_url(issuer)
        self._fetcher = fetcher
        self._retry_interval = retry_interval
        self._clock = clock
        self._document: dict[str, Any] | None = None
        self._retry_at = float("-inf")
        self._lock = asyncio.Lock()

    async def document(self) -> dict[str, Any]:
        if self._document is not None:
            return self._document
        async with self._lock:
            if self._document is not None:
                return self._document
            if self._clock() < self._retry_at:
                raise AuthServerUnavailableError("authorization server metadata is unavailable")
            self._retry_at = self._clock() + self._retry_interval
            document, _ = await self._fetcher.get_json(self.url, "authorization server metadata")
            if document.get("issuer") != self.issuer:
                raise AuthServerUnavailableError("authorization server metadata names another issuer")
            self._document = document
            return document

    async def endpoint(self, name: str) -> str:
        """An endpoint URL from the metadata, e.g. ``jwks_uri`` or ``introspection_endpoint``."""
        value = (await self.document()).get(name)
        if not isinstance(value, str):
            raise AuthServerUnavailableError(f"authorization server metadata has no {name}")
        try:
            return check_url(value, name)
        except ValueError as exc:
            raise AuthServerUnavailableError(f"authorization server metadata has an unusable {name}") from exc

    def forget(self) -> None:
        """Drop the cached document (an endpoint it named failed); the next use refetches it."""
        self._document = None
