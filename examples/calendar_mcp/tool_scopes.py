"""Per-tool OAuth scopes for an MCP server built with the official SDK, with the MCP step-up answer.

The resource-server kit's ``BearerAuthMiddleware`` checks the scopes every request needs
(``read:calendar`` to use the server at all). Some tools need more (``create_event`` needs
``write:calendar``), and the MCP authorization spec says how to ask for it: answer the HTTP
request with ``403`` and ``WWW-Authenticate: Bearer error="insufficient_scope", scope="…",
resource_metadata="…"``; the client then re-authorizes for the union of what it has and what
is named, and retries. That answer has to be the HTTP status of the ``tools/call`` POST, so it
cannot come from inside a tool (by then the SDK has answered 200 or opened an event stream).

``ToolScopeMiddleware`` therefore sits between the kit's middleware and the SDK's
``streamable_http_app()``: it reads the POSTed JSON-RPC body (bounded, then replayed to the
SDK unchanged, with the kit's ``authserver.resource.jsonrpc`` helpers), and for each
``tools/call`` compares the tool's scopes with the verified token the kit left in
``scope["state"]["auth"]``. The body is authoritative: the ``Mcp-Name`` header
of newer protocol revisions only mirrors it, and the SDK rejects a mismatch anyway.

It also hands the verified token to the SDK as its own principal (``scope["user"]``, and the
``get_access_token()`` context variable), which the SDK uses to bind each MCP session to the
(client, issuer, subject) that opened it: a session id presented with another person's token
is answered as if it did not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from authserver.resource import VerifiedToken, resource_metadata_url
from authserver.resource.jsonrpc import MAX_BODY_BYTES, called_tools, read_body, replay

STATE_KEY = "auth"  # where BearerAuthMiddleware puts the VerifiedToken


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _union(*groups: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(s for group in groups for s in group))


class ToolScopeMiddleware:
    """ASGI middleware: ``tool_scopes`` maps a tool name to the scopes a call to it needs.

    Put it *inside* ``BearerAuthMiddleware`` (which verifies the token first). Tools not in the
    map need nothing beyond what ``BearerAuthMiddleware`` already required. The 403 names the
    scopes the token holds that this server uses, plus the missing ones, so a client that does
    not merge scopes itself still asks for everything it needs.
    """

    def __init__(self, app: ASGIApp, tool_scopes: Mapping[str, Sequence[str]], *, resource: str,
                 base_scopes: Sequence[str] = (), max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.tool_scopes = {name: tuple(scopes) for name, scopes in tool_scopes.items()}
        self.resource_metadata_url = resource_metadata_url(resource)
        self.known_scopes = frozenset(_union(base_scopes, *self.tool_scopes.values()))
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        verified: VerifiedToken | None = scope.get("state", {}).get(STATE_KEY)
        if scope["method"] == "POST":
            body = await read_body(receive, self.max_body_bytes)
            if body.disconnected:
                return  # the client went away
            if not body.complete:
                await _respond(send, 413, {"error": "request_too_large"}, [])
                return
            granted = set(verified.scopes) if verified else set()
            for tool in called_tools(body.data):
                missing = [s for s in self.tool_scopes.get(tool, ()) if s not in granted]
                if missing:
                    await self._insufficient_scope(send, tool, verified, missing)
                    return
            receive = replay(body, receive)
        if verified is None:
            await self.app(scope, receive, send)
            return
        user = AuthenticatedUser(_sdk_access_token(verified, scope))
        scope["user"], scope["auth"] = user, AuthCredentials(list(verified.scopes))
        reset = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)

    async def _insufficient_scope(self, send: Send, tool: str, verified: VerifiedToken | None,
                                  missing: list[str]) -> None:
        held = [s for s in (verified.scopes if verified else ()) if s in self.known_scopes]
        challenge = ", ".join(f"{k}={_quote(v)}" for k, v in (
            ("error", "insufficient_scope"), ("scope", " ".join(_union(held, missing))),
            ("resource_metadata", self.resource_metadata_url)))
        body = {"error": "insufficient_scope",
                "error_description": f"the tool {tool!r} needs the scope {' '.join(missing)}"}
        await _respond(send, 403, body, [(b"www-authenticate", f"Bearer {challenge}".encode("latin-1"))])


def _sdk_access_token(verified: VerifiedToken, scope: Scope) -> AccessToken:
    header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), "")
    return AccessToken(token=header.partition(" ")[2].strip(), client_id=verified.client_id,
                       scopes=list(verified.scopes), expires_at=verified.expires_at, resource=verified.audience,
                       subject=verified.subject, claims=dict(verified.claims))


async def _respond(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": data})
