"""Pure ASGI middleware: request body limits and security headers on every response."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # No inline script anywhere; pages work without JavaScript. Script files of our own
    # (`script-src 'self'`: the console's Copy button) only enhance a page. `form-action` is
    # left out on purpose: browsers apply it to the redirect that follows a consent POST,
    # which must go to the client's (registered) redirect URI.
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
     b"base-uri 'none'"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.headers = list(SECURITY_HEADERS)
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.headers if n not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = True
                if too_large:
                    await _reject(send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reject(send)


async def _reject(send: Send) -> None:
    body: dict[str, Any] = {"error": "invalid_request", "error_description": "request body too large"}
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": payload})


class PublicCORS:
    """CORS for the endpoints browser-based MCP clients call: no credentials, any origin.

    Only the listed paths get it; sign-in, consent and admin pages stay same-origin.
    """

    def __init__(self, app: ASGIApp, paths: list[str], prefixes: list[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.prefixes = tuple(prefixes)

    def _applies(self, path: str) -> bool:
        return path in self.paths or path.startswith(self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and any(name == b"access-control-request-method"
                                                for name, _ in scope.get("headers", [])):
            await send({"type": "http.response.start", "status": 204, "headers": [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
                (b"access-control-allow-headers", b"authorization, content-type, dpop, mcp-protocol-version"),
                (b"access-control-max-age", b"86400")]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                existing = [(n, v) for n, v in message.get("headers", []) if n != b"access-control-allow-origin"]
                # RFC 9449 §8: a browser client must be able to read the nonce it is asked to use.
                message["headers"] = [*existing, (b"access-control-allow-origin", b"*"),
                                      (b"access-control-expose-headers", b"DPoP-Nonce, WWW-Authenticate")]
            await send(message)

        await self.app(scope, receive, send_with_cors)


class TrustedProxies:
    """The client address behind a trusted reverse proxy, for everything downstream.

    Rewrites ``scope["client"]`` from ``X-Forwarded-For`` when the peer is one of
    ``AUTHSERVER_TRUSTED_PROXIES`` (see net.client_address), so every limit, allow-list and audit
    row reads the same address. Only mounted when the setting is non-empty.
    """

    def __init__(self, app: ASGIApp, networks: tuple[Any, ...]) -> None:
        self.app = app
        self.networks = networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("client"):
            from starlette.requests import HTTPConnection

            from authserver.net import client_address

            address = client_address(HTTPConnection(scope), self.networks)
            if address is not None and address != scope["client"][0]:
                scope = {**scope, "client": (address, 0)}
        await self.app(scope, receive, send)
