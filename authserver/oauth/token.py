"""The token endpoint (OAuth 2.1 §3.2): client authentication, then one grant handler.

Every answer, success or error, carries ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from authserver.clients.models import Client
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE, CommitThenRaise, OAuthError, UnauthorizedClient, UnsupportedGrantType
from authserver.oauth.client_auth import authenticate_client, read_client_request
from authserver.oauth.grants import authorization_code, client_credentials, refresh_token
from authserver.oauth.params import Params, require
from authserver.oauth.registry import ClientRegistry
from authserver.services import Services

Grant = Callable[[Session, Services, Client, Params, str | None], dict[str, Any]]

GRANTS: dict[str, Grant] = {
    "authorization_code": authorization_code.exchange,
    "refresh_token": refresh_token.exchange,
    "client_credentials": client_credentials.exchange,
}


def router(registry: ClientRegistry) -> APIRouter:
    api = APIRouter()

    @api.post("/token")
    async def token(request: Request, services: ServicesDep) -> JSONResponse:
        params = await read_client_request(request, registry)
        ip = request.client.host if request.client else None
        body = await run_in_threadpool(_handle, services, registry, request, params, ip)
        background = BackgroundTask(services.purger.run_if_due) if services.purger.due() else None
        return JSONResponse(body, headers=NO_STORE, background=background)

    return api


def _handle(services: Services, registry: ClientRegistry, request: Request, params: Params,
            ip: str | None) -> dict[str, Any]:
    grant_type = require(params, "grant_type")
    handler = GRANTS.get(grant_type)
    if handler is None:
        raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
    deferred: list[OAuthError] = []
    with services.db.session() as session:
        client = authenticate_client(session, registry, request, params)
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
        try:
            return handler(session, services, client, params, ip)
        except CommitThenRaise as exc:
            # The grant changed state that must persist (e.g. a replayed code's revocations).
            deferred.append(exc.error)
    raise deferred[0]
