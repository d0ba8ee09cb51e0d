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

Observation (``observe``) happens here too, in the dispatch itself rather than in a wrapper
around each request: the request id (``X-Request-Id`` echoed; made only for the access log and
error answers, whose reasons are logged), the request's tally for the
metrics (route = the exact path matched, a template with no parameters) and, when asked for,
the access line. ``observe(...)`` switches each on; off, the dispatch is what it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from authserver.errors import OAuthError, oauth_error
from authserver.observe import REQUEST_ID, TALLY, access_line, given_request_id, new_request_id

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Endpoint] = {}
        self.observed = False
        self.counting = False
        self.log_access = False

    def add(self, method: str, path: str, endpoint: Endpoint) -> None:
        self.routes[(method, path)] = endpoint

    def observe(self, *, count: bool, log_access: bool) -> None:
        self.counting, self.log_access = count, log_access
        self.observed = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        endpoint = self.routes[(method, path)]
        request = Request(scope, receive)
        if not self.observed:
            try:
                response = await endpoint(request)
            except OAuthError as exc:
                response = oauth_error(request, exc)
            await response(scope, receive, send)
            return
        start = perf_counter()
        # The request's own id is echoed; one is made only when a line will name it (the access log,
        # an error's reason): making and sending one on every answer cost 1.5 µs of a 34 µs introspection.
        request_id = given_request_id(scope)
        try:
            response = await endpoint(request)
        except OAuthError as exc:
            request_id = request_id or new_request_id()
            token = REQUEST_ID.set(request_id.decode())  # the refusal's log line names the request
            try:
                response = oauth_error(request, exc)
            finally:
                REQUEST_ID.reset(token)
        if request_id is None and self.log_access:
            request_id = new_request_id()
        if request_id is not None:
            response.raw_headers.append((b"x-request-id", request_id))
        await response(scope, receive, send)
        seconds = perf_counter() - start
        if self.counting:
            TALLY.request(path, method, response.status_code, seconds)
        if self.log_access:
            access_line(scope, path, response.status_code, seconds, request_id or b"-")


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
