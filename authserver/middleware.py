"""Pure ASGI middleware: request header and body limits, CORS, and security headers on every response."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def content_security_policy(image_origins: tuple[str, ...] = ()) -> bytes:
    """No inline script anywhere; pages work without JavaScript. Script files of our own
    (`script-src 'self'`: the console's Copy button) only enhance a page. `form-action` is
    left out on purpose: browsers apply it to the redirect that follows a consent POST,
    which must go to the client's (registered) redirect URI.

    ``image_origins``: exact https origins images may also come from; only an operator's https
    logo (``Settings.logo_origin``) is ever one, never a wildcard.
    """
    images = " ".join(["'self'", "data:", *image_origins])
    return (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; frame-ancestors 'none'; "
            "base-uri 'none'").encode("ascii")


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", content_security_policy()),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool = False, image_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.headers = [(n, content_security_policy(image_origins) if n == b"content-security-policy" else v)
                        for n, v in SECURITY_HEADERS]
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


MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_COUNT = 100


class HeaderLimit:
    """Refuse requests whose headers total over ``max_bytes`` (names and values) or number over
    ``max_count``, with 431 (RFC 6585 §5), before anything else reads them.

    Our own rather than the server's: uvicorn's httptools parser (what ``authserver serve`` and the
    Docker image run) has no header limit, and ``h11_max_incomplete_event_size`` applies to h11
    only. The server has buffered the headers by the time we see them, so this bounds what the
    application parses, logs and stores (a multi-megabyte ``User-Agent`` in every audit row), not
    the socket read; a proxy in front should cap that too. 16 KB is eight times what browsers send
    with a full cookie jar here; 100 headers is what h11 and Node allow.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_HEADER_BYTES, max_count: int = MAX_HEADER_COUNT) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope.get("headers", [])
            if len(headers) > self.max_count or sum(len(n) + len(v) for n, v in headers) > self.max_bytes:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009})
                    return
                payload = json.dumps({"error": "invalid_request",
                                      "error_description": "request headers too large"}).encode()
                await send({"type": "http.response.start", "status": 431, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": payload})
                return
        await self.app(scope, receive, send)


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


class RegistrationCORS:
    """CORS for dynamic registration (``/register``, ``/register/{id}``), for listed origins only.

    Off unless AUTHSERVER_REGISTRATION_CORS_ORIGINS names origins: MCP clients are not browsers,
    and a ``*`` here lets any web page register clients from its visitors' addresses (each
    visitor's IP spends the registration limit, and the page reads the answer). A listed origin
    gets its own origin echoed (with ``Vary: Origin``); any other gets no CORS headers at all, so
    the browser withholds the response and refuses non-simple requests at preflight.
    """

    def __init__(self, app: ASGIApp, prefix: str, origins: list[str]) -> None:
        self.app = app
        self.path = prefix
        self.origins = frozenset(o.encode("latin-1") for o in origins)

    def _applies(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        origin = next((value for name, value in headers if name == b"origin"), None)
        allowed = origin is not None and origin.lower() in self.origins
        if scope["method"] == "OPTIONS" and any(name == b"access-control-request-method" for name, _ in headers):
            cors = [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
                    (b"access-control-allow-headers", b"authorization, content-type"),
                    (b"access-control-max-age", b"600")] if allowed and origin is not None else [(b"vary", b"Origin")]
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                existing = [(n, v) for n, v in message.get("headers", []) if n != b"access-control-allow-origin"]
                extra = [(b"access-control-allow-origin", origin)] if allowed and origin is not None else []
                message["headers"] = [*existing, *extra, (b"vary", b"Origin")]
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
