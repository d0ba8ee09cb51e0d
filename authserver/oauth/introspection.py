"""RFC 7662 token introspection.

Callers authenticate as confidential clients. A resource server's client (``can_introspect``)
learns about access tokens for the resources it is registered for; any confidential client
about its own tokens (refresh tokens only to their own client). Everything else, like expired,
revoked, forged or foreign tokens, is ``{"active": false}`` and nothing more (§2.2).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE, InvalidClient
from authserver.oauth.client_auth import BASIC_CHALLENGE, authenticate_client, read_client_request
from authserver.oauth.params import Params, require
from authserver.oauth.registry import ClientRegistry
from authserver.services import Services
from authserver.tokens import lookup

INACTIVE: dict[str, Any] = {"active": False}


def router(registry: ClientRegistry) -> APIRouter:
    api = APIRouter()

    @api.post("/introspect")
    async def introspect(request: Request, services: ServicesDep) -> JSONResponse:
        params = await read_client_request(request, registry)

        def work() -> dict[str, Any]:
            with services.db.read_session() as session:
                caller = authenticate_client(session, registry, request, params)
                if caller.is_public:
                    raise InvalidClient("introspection requires a confidential client", headers=BASIC_CHALLENGE)
                return introspect_token(session, services, caller, params)

        return JSONResponse(await run_in_threadpool(work), headers=NO_STORE)

    return api


def may_see(caller: Client, audience: str, token_client_id: str) -> bool:
    return token_client_id == caller.client_id or (caller.can_introspect and audience in caller.resources)


def introspect_token(session: Session, services: Services, caller: Client, params: Params) -> dict[str, Any]:
    token = require(params, "token")
    issuer = services.settings.issuer
    kinds = ["access_token", "refresh_token"]
    if params.get("token_type_hint") == "refresh_token" or "." not in token:
        kinds.reverse()
    for kind in kinds:
        if kind == "access_token":
            access = lookup.access_token(session, services, token)
            if access is None:
                continue
            claims = access.claims
            if access.revoked or not may_see(caller, claims["aud"], claims["client_id"]):
                return INACTIVE
            body: dict[str, Any] = {"active": True, "token_type": "Bearer", **{k: claims[k] for k in (
                "scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti") if k in claims}}
            if "nbf" in claims:
                body["nbf"] = claims["nbf"]
            if access.username:
                body["username"] = access.username
            return body
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

