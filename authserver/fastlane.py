"""The hot lane: token, introspection, JWKS and metadata requests skip FastAPI's stack.

These endpoints are called by machines, constantly: every MCP connection fetches metadata and
keys, and a resource server may introspect on every tool call. Going through FastAPI costs
each of them more than the work itself: its middleware stack (error, telemetry, body-limit and
exception middlewares, an exit stack per request) and route resolution past every page route.
The endpoints here are plain Starlette endpoints (``Request`` in, ``Response`` out) that take
their services from a closure, so they need none of that.

``AuthServer`` (the app ``create_app`` returns) sends an exact (method, path) match to the hot
lane and everything else to FastAPI. The same endpoints are also mounted as ordinary routes,
so ``HEAD``, CORS preflights and anything not matched exactly get the usual handling. The lane
wraps them in the app's own middlewares (security headers, body limit, CORS) and turns
``OAuthError`` into a response in ``errors.oauth_error``, the place every OAuth error goes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from authserver.errors import OAuthError, oauth_error

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Endpoint] = {}

    def add(self, method: str, path: str, endpoint: Endpoint) -> None:
        self.routes[(method, path)] = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes[(scope["method"], scope["path"])]
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except OAuthError as exc:
            response = oauth_error(request, exc)
        await response(scope, receive, send)


class AuthServer(FastAPI):
    """FastAPI, with the hot lane in front (see the module docstring)."""

    hot_routes: HotRoutes
    hot_app: ASGIApp

    def use_hot_lane(self, routes: HotRoutes, wrapped: ASGIApp) -> None:
        """``wrapped``: ``routes`` inside the middlewares every response must pass through."""
        self.hot_routes = routes
        self.hot_app = wrapped
        for (method, path), endpoint in routes.routes.items():
            self.router.add_route(path, endpoint, methods=[method], include_in_schema=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.hot_routes.routes:
            scope["app"] = self
            await self.hot_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
