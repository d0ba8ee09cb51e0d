"""RFC 7662 token introspection.

Callers authenticate as confidential clients. A resource server's client (``can_introspect``)
learns about access tokens for the resources it is registered for; any confidential client
about its own tokens (refresh tokens only to their own client). Everything else, like expired,
revoked, forged or foreign tokens, is ``{"active": false}`` and nothing more (§2.2).

An access token's verdict (signature, claims, and whether it was taken back) is kept for at
most ``AUTHSERVER_CACHE_SECONDS`` per token (``tokens.lookup.cached_access_token``): a
revocation anywhere reads inactive on every process within that bound, at once on this one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from authserver import observe
from authserver.clients.cache import ClientView
from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.errors import NO_STORE, InvalidClient
from authserver.oauth.client_auth import (
    BASIC_CHALLENGE,
    authenticate_cached,
    authenticate_client,
    credentials,
    read_client_request,
)
from authserver.oauth.params import Params, require
from authserver.oauth.registry import ClientRegistry
from authserver.observe import CLIENT_ID
from authserver.responses import JSON
from authserver.services import Services
from authserver.tokens import lookup

INACTIVE: dict[str, Any] = {"active": False}


def endpoint(services: Services, registry: ClientRegistry) -> Callable[[Request], Awaitable[Response]]:
    async def introspect(request: Request) -> Response:
        params = await read_client_request(request, registry, services.assertions)
        given = credentials(request, params)
        if registry.is_document_url(given.client_id):
            # Metadata-document clients are public: refused below, after the usual lookup.
            return answer(await run_in_threadpool(_introspect, services, registry, request, params))
        caller = await authenticate_cached(services.clients, given)
        request.scope[CLIENT_ID] = caller.client_id
        if caller.is_public:
            raise InvalidClient("introspection requires a confidential client", headers=BASIC_CHALLENGE)
        token = require(params, "token")
        if _access_token_first(params, token):
            # The common case, an active access token, is answered from the verdict cache.
            access = await lookup.cached_access_token(services, token)
            if access is not None:
                return answer(describe_access(caller, access))
        return answer(await run_in_threadpool(_introspect, services, registry, request, params))

    return introspect


def answer(body: dict[str, Any]) -> Response:
    """On the event loop (the threadpool's work returns here first)."""
    observe.count_on_loop("introspections", "active" if body["active"] else "inactive")
    return JSON(body, headers=NO_STORE)


def _introspect(services: Services, registry: ClientRegistry, request: Request, params: Params) -> dict[str, Any]:
    with services.db.read_session() as session:
        caller = authenticate_client(session, registry, request, params)
        if caller.is_public:
            raise InvalidClient("introspection requires a confidential client", headers=BASIC_CHALLENGE)
        return introspect_token(session, services, caller, params)


def _access_token_first(params: Params, token: str) -> bool:
    return params.get("token_type_hint") != "refresh_token" and "." in token


def may_see(caller: Client | ClientView, audience: str, token_client_id: str) -> bool:
    return token_client_id == caller.client_id or (caller.can_introspect and audience in caller.resources)


def describe_access(caller: Client | ClientView, access: lookup.AccessTokenInfo) -> dict[str, Any]:
    claims = access.claims
    if access.revoked or not may_see(caller, claims["aud"], claims["client_id"]):
        return INACTIVE
    body: dict[str, Any] = {"active": True, "token_type": "Bearer", **{k: claims[k] for k in (
        "scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti") if k in claims}}
    if "cnf" in claims:
        # RFC 9449 §6.2: a DPoP-bound token, and the key thumbprint the resource server must see proven.
        body["token_type"] = "DPoP"
        body["cnf"] = claims["cnf"]
    if "nbf" in claims:
        body["nbf"] = claims["nbf"]
    if access.username:
        body["username"] = access.username
    return body


def introspect_token(session: Session, services: Services, caller: Client, params: Params) -> dict[str, Any]:
    token = require(params, "token")
    issuer = services.settings.issuer
    kinds = ["access_token", "refresh_token"]
    if not _access_token_first(params, token):
        kinds.reverse()
    for kind in kinds:
        if kind == "access_token":
            access = lookup.access_token(session, services, token)
            if access is None:
                continue
            return describe_access(caller, access)
        info = lookup.refresh_token(session, token)
        if info is None:
            continue
        row = info.row
        # A refresh token concerns only the client holding it: a resource server never receives
        # one legitimately, and reporting it active would let it pass for an access token.
        if not info.active(utcnow()) or row.client_id != caller.client_id:
            return INACTIVE
        body = {"active": True, "token_type": "refresh_token", "scope": " ".join(row.scopes),
                "client_id": row.client_id, "sub": str(row.user_id or row.client_id), "aud": row.resource,
                "iss": issuer, "exp": int(row.expires_at.timestamp()), "iat": int(row.created_at.timestamp())}
        if info.username:
            body["username"] = info.username
        return body
    return INACTIVE

