"""The token endpoint (OAuth 2.1 §3.2): client authentication, then one grant handler.

Every answer, success or error, carries ``Cache-Control: no-store``.

Each authenticated client may make AUTHSERVER_TOKEN_RATE_LIMIT requests per
AUTHSERVER_TOKEN_RATE_WINDOW seconds (every grant); past it, 429 ``temporarily_unavailable`` with
``Retry-After`` (``errors.RateLimited``). Counted after client authentication, so only real
clients have counters, and in memory synchronised with the other nodes in batches
(``limits.shared``): no store round trip per request, the overshoot bound stated there.

``client_credentials`` is served on the event loop from the hot-path caches (see its module).
Refresh rotation authenticates the client from the same cache and does its one read and one
write in the threadpool (``refresh_token.rotate``); what it leaves undecided, the code exchange
and every metadata-document client run one ORM unit of work in the threadpool (``_handle``).

DPoP (``authserver.dpop``): a request with a ``DPoP`` header has its proof checked (and its
``jti`` spent) before anything else; the grants bind what they issue to the proof's key. A
request without one pays a scan of the raw headers and nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from authserver import dpop
from authserver.clients.cache import ClientView
from authserver.clients.models import SELF_REGISTERED, Client
from authserver.errors import (
    NO_STORE,
    CommitThenRaise,
    OAuthError,
    RateLimited,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from authserver.oauth.client_auth import authenticate_cached, authenticate_client, credentials, read_client_request
from authserver.oauth.grants import authorization_code, client_credentials, refresh_token
from authserver.oauth.params import Params, require
from authserver.oauth.registry import ClientRegistry
from authserver.observe import CLIENT_ID
from authserver.responses import JSON
from authserver.services import Services

Grant = Callable[[Session, Services, Client, Params, str | None, str | None], dict[str, Any]]

CLIENT_CREDENTIALS = "client_credentials"
REFRESH_TOKEN = "refresh_token"
GRANTS: dict[str, Grant] = {
    "authorization_code": authorization_code.exchange,
    REFRESH_TOKEN: refresh_token.exchange,
}


def endpoint(services: Services, registry: ClientRegistry) -> Callable[[Request], Awaitable[Response]]:
    proofs = dpop.TokenEndpointProofs(services.settings, services.db, services.secret)

    async def token(request: Request) -> Response:
        params = await read_client_request(request, registry, services.assertions)
        grant_type = require(params, "grant_type")
        proof = await proofs.check(request) if dpop.has_dpop_header(request) else None
        jkt = proof.jkt if proof is not None else None
        ip = request.client.host if request.client else None
        body: dict[str, Any] | None = None
        given = credentials(request, params) if grant_type in (CLIENT_CREDENTIALS, REFRESH_TOKEN) else None
        if given is not None and not registry.is_document_url(given.client_id):
            client = await authenticate_cached(services.clients, given)
            request.scope[CLIENT_ID] = client.client_id
            admit(services, client)
            if grant_type not in client.grant_types:
                raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
            dpop.require_proof_if_needed(services.settings, client, proof)
            if grant_type == CLIENT_CREDENTIALS:
                body = await client_credentials.exchange(services, client, params, ip, jkt)
            else:
                body = await refresh_token.rotate(services, client, params, ip, jkt)
        if body is None:
            body = await run_in_threadpool(_handle, services, registry, request, params, grant_type, ip, proof)
        background = BackgroundTask(services.purger.run_if_due) if services.purger.due() else None
        headers = {**NO_STORE, **proofs.response_headers()} if proof is not None else NO_STORE
        return JSON(body, headers=headers, background=background)

    return token


def admit(services: Services, client: Client | ClientView) -> None:
    """The per-client token rate, and for a self-registered client its own budget too."""
    wait = services.token_rate.admit(client.client_id)
    if wait is None and client.kind in SELF_REGISTERED:
        wait = services.self_registered_token_rate.admit(client.client_id)
    if wait is not None:
        raise RateLimited("too many token requests for this client; try again later", wait)


def _handle(services: Services, registry: ClientRegistry, request: Request, params: Params, grant_type: str,
            ip: str | None, proof: dpop.Proof | None) -> dict[str, Any]:
    handler = GRANTS.get(grant_type)
    if handler is None and grant_type != CLIENT_CREDENTIALS:
        raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
    deferred: list[OAuthError] = []
    with services.db.session() as session:
        client = authenticate_client(session, registry, request, params)
        request.scope[CLIENT_ID] = client.client_id
        admit(services, client)
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
        if handler is None:
            # Only a metadata-document client comes here for client_credentials, and those are public.
            raise UnauthorizedClient("a public client cannot use client_credentials")
        dpop.require_proof_if_needed(services.settings, client, proof)
        try:
            return handler(session, services, client, params, ip, proof.jkt if proof is not None else None)
        except CommitThenRaise as exc:
            # The grant changed state that must persist (e.g. a replayed code's revocations).
            deferred.append(exc.error)
    raise deferred[0]
