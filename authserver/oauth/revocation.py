"""RFC 7009 token revocation.

A client may revoke only its own tokens. Unknown, foreign or already dead tokens get
the same 200 (§2.2), so the endpoint reveals nothing. Revoking a refresh token ends its
family; revoking an access token puts its ``jti`` on the deny list until it expires.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.audit.log import record
from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE
from authserver.oauth.client_auth import authenticate_client, read_client_request
from authserver.oauth.params import Params, require
from authserver.oauth.registry import ClientRegistry
from authserver.services import Services
from authserver.tokens import lookup, refresh


def router(registry: ClientRegistry) -> APIRouter:
    api = APIRouter()

    @api.post("/revoke")
    async def revoke(request: Request, services: ServicesDep) -> Response:
        params = await read_client_request(request, registry, services.assertions)
        ip = request.client.host if request.client else None

        def work() -> None:
            with services.db.session() as session:
                client = authenticate_client(session, registry, request, params)
                revoke_token(session, services, client, params, ip)

        await run_in_threadpool(work)
        return Response(status_code=200, headers=NO_STORE)

    return api


def revoke_token(session: Session, services: Services, client: Client, params: Params, ip: str | None) -> None:
    token = require(params, "token")
    # The hint only orders the look-ups (§2.1); both kinds are always tried.
    kinds = ["access_token", "refresh_token"]
    if params.get("token_type_hint") == "refresh_token" or "." not in token:
        kinds.reverse()
    now = utcnow()
    for kind in kinds:
        if kind == "refresh_token":
            info = lookup.refresh_token(session, token)
            if info is None:
                continue
            if info.row.client_id == client.client_id:
                refresh.revoke_family(session, info.row.family_id, now)
                record(session, "token.revoked", client_id=client.client_id, ip=ip, token_type="refresh_token",
                       family=str(info.row.family_id))
            return
        access = lookup.access_token(session, services, token)
        if access is None:
            continue
        if access.claims["client_id"] == client.client_id and not access.revoked:
            refresh.deny_access_token(session, access.claims["jti"],
                                      datetime.fromtimestamp(access.claims["exp"], UTC), now)
            record(session, "token.revoked", client_id=client.client_id, ip=ip, token_type="access_token",
                   jti=access.claims["jti"])
        return
