"""ASGI middleware that puts a bearer-token check in front of an MCP server.

The answers follow RFC 6750 §3 and the MCP authorization spec, because MCP
clients act on them: a 401 names the protected-resource metadata URL (where the
client discovers the authorization server) and the scopes to ask for; a token that
was presented but failed adds ``error="invalid_token"``; a valid token without the
needed scopes gets 403 ``insufficient_scope`` with the full scope list, which is what
makes a client step up. The header carries no ``error_description``: descriptions
are for humans and go in the JSON body, and a fixed header shape is easier for
clients (and tests) to parse.

DPoP (RFC 9449 §7): ``Authorization: DPoP <token>`` with one ``DPoP`` proof header is verified
by ``BearerVerifier.verify_dpop`` against the request's method and URI; the URI is the public
origin (by default that of the verifier's resource, so a proxy in front changes nothing) plus
the request path. Failures of a DPoP request, and a DPoP-bound token sent as ``Bearer``, are
answered with a ``DPoP`` challenge naming the accepted algorithms
(``WWW-Authenticate: DPoP error="invalid_dpop_proof", algs="ES256 …"``), and ``use_dpop_nonce``
with a ``DPoP-Nonce`` header when the verifier requires nonces. Bearer requests keep their
``Bearer`` challenges.

A verified request carries its ``VerifiedToken`` in ``scope["state"]["auth"]``, read
as ``request.state.auth`` in Starlette/FastAPI handlers. The metadata paths stay
public, and so do CORS preflights (a browser never sends credentials on those).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from authserver.resource.errors import BearerTokenError, InvalidDPoPProofError, UseDPoPNonceError
from authserver.resource.metadata import WELL_KNOWN, resource_metadata_url
from authserver.resource.verifier import BearerVerifier

STATE_KEY = "auth"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BearerAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        verifier: BearerVerifier,
        *,
        required_scopes: Sequence[str] = (),
        resource_metadata_url: str | None = None,
        public_paths: Sequence[str] = (WELL_KNOWN,),
        public_origin: str | None = None,
    ) -> None:
        """``resource_metadata_url`` defaults to the RFC 9728 URL of ``verifier.resource``.

        ``public_paths`` are served without a token: each entry matches itself and
        everything below it (``/.well-known/oauth-protected-resource/mcp``).

        ``public_origin`` (``https://mcp.example.com``) is how clients address this server,
        for the ``htu`` of DPoP proofs; it defaults to the origin of ``verifier.resource``.
        """
        self.app = app
        self.verifier = verifier
        self.required_scopes = tuple(required_scopes)
        self.resource_metadata_url = resource_metadata_url or _default_metadata_url(verifier)
        self.public_paths = tuple(p.rstrip("/") for p in public_paths)
        origin = urlsplit(public_origin or verifier.resource)
        self.public_origin = f"{origin.scheme}://{origin.netloc}"

    def _is_public(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        return any(path == p or path.startswith(p + "/") for p in self.public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._is_public(scope):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if scope["type"] == "http" and scope.get("method") == "OPTIONS" and any(
                k == b"access-control-request-method" for k, _ in headers):
            await self.app(scope, receive, send)
            return
        values = [v for k, v in headers if k == b"authorization"]
        if len(values) > 1:
            await self._deny(scope, send, 400, "invalid_request", "more than one Authorization header")
            return
        scheme, token = _credentials(values[0].decode("latin-1")) if values else (None, None)
        if token is None:
            await self._deny(scope, send, 401, None, "a bearer token is required")
            return
        try:
            if scheme == "dpop":
                proofs = [v for k, v in headers if k == b"dpop"]
                if len(proofs) > 1:
                    raise InvalidDPoPProofError("send exactly one DPoP header")
                verified = await self.verifier.verify_dpop(
                    token, proofs[0].decode("latin-1") if proofs else None, method=scope.get("method", "GET"),
                    url=self.public_origin + scope.get("path", "/"))
            else:
                verified = await self.verifier.verify(token)
        except BearerTokenError as exc:
            nonce = exc.nonce if isinstance(exc, UseDPoPNonceError) else None
            await self._deny(scope, send, exc.status_code, exc.error, exc.description,
                             dpop=exc.dpop or scheme == "dpop", nonce=nonce)
            return
        if not verified.has_scopes(*self.required_scopes):
            await self._deny(scope, send, 403, "insufficient_scope", "the token lacks a required scope",
                             dpop=scheme == "dpop")
            return
        scope.setdefault("state", {})[STATE_KEY] = verified
        await self.app(scope, receive, send)

    def www_authenticate(self, error: str | None, *, dpop: bool = False) -> str:
        """The challenge; ``dpop``: under the DPoP scheme, with the accepted proof algorithms (§7.1)."""
        params: list[tuple[str, str]] = []
        if error == "insufficient_scope":
            params.append(("error", error))
            if self.required_scopes:
                params.append(("scope", " ".join(self.required_scopes)))
            params.append(("resource_metadata", self.resource_metadata_url))
        else:
            if error is not None:
                params.append(("error", error))
            params.append(("resource_metadata", self.resource_metadata_url))
            if self.required_scopes:
                params.append(("scope", " ".join(self.required_scopes)))
        if dpop:
            params.append(("algs", " ".join(self.verifier.dpop.algorithms)))
        return ("DPoP " if dpop else "Bearer ") + ", ".join(f"{name}={_quote(value)}" for name, value in params)

    async def _deny(self, scope: Scope, send: Send, status: int, error: str | None, description: str, *,
                    dpop: bool = False, nonce: str | None = None) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": error or "unauthorized"})
            return
        body = json.dumps({"error": error or "invalid_token", "error_description": description}).encode()
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if status in (401, 403):
            response_headers.append((b"www-authenticate", self.www_authenticate(error, dpop=dpop).encode("latin-1")))
            if nonce is not None:
                response_headers.append((b"dpop-nonce", nonce.encode("latin-1")))
        elif status == 503:
            response_headers.append((b"retry-after", b"5"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})


def _default_metadata_url(verifier: BearerVerifier) -> str:
    return resource_metadata_url(verifier.resource)


def _credentials(header: str) -> tuple[str | None, str | None]:
    """(``bearer`` or ``dpop``, the token) of an ``Authorization`` header; (None, None) for other schemes."""
    scheme, _, credentials = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop"):
        return None, None
    return scheme, credentials.strip() or None
