"""The registration endpoint (RFC 7591) and client configuration endpoint (RFC 7592).

Policy (the console's registration page; AUTHSERVER_REGISTRATION until an operator saves):
``open`` for MCP interoperability, ``token`` to require an initial access token (the
environment's AUTHSERVER_REGISTRATION_INITIAL_ACCESS_TOKEN or a live one made in the console),
``off`` to accept no new registrations. The router is always mounted and reads the policy per
request (``services.policy``, at most a few seconds stale); with ``off``, ``POST /register``
answers 404 exactly like an unknown route, because the metadata then names no
registration endpoint and a client has nothing to be told. Clients registered earlier keep
their RFC 7592 configuration endpoint (their registration access token is their credential).
Registrations are limited per address (IPv6: per /64) per window (AUTHSERVER_REGISTRATION_RATE_LIMIT
per AUTHSERVER_REGISTRATION_RATE_WINDOW seconds) on the shared limit counters (``authserver.limits``),
so the limit holds across nodes. Every well-formed attempt counts, accepted or not by the database;
one past the limit is answered 429 with ``Retry-After`` (``errors.RateLimited``).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from authserver.audit.log import record
from authserver.clients import registration
from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE, InvalidClientMetadata, InvalidToken, RateLimited
from authserver.net import address_group
from authserver.oauth.params import has_control_characters
from authserver.policy import repository as policy
from authserver.secrets import secret_matches
from authserver.services import Services
from authserver.text import has_lone_surrogate

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def read_json(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise InvalidClientMetadata("the request body must be application/json")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidClientMetadata("the request body is not valid JSON") from None
    if has_lone_surrogate(body):
        # Refused before anything is written (PostgreSQL would refuse it at insert, SQLite store it).
        raise InvalidClientMetadata("the request body contains a lone UTF-16 surrogate (\\u-escape), which is not text")
    return body


def router(services: Services) -> APIRouter:
    api = APIRouter()
    settings = services.settings

    def config_uri(client_id: str) -> str:
        return settings.endpoint(f"/register/{client_id}")

    def initial_access_token_ok(token: str | None) -> bool:
        """RFC 7591 §3: the environment's token (constant-time compare) or a live console-made one."""
        if not token:
            return False
        expected = settings.registration_initial_access_token
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            return True
        with services.db.session() as session:
            return policy.use_token(session, token)

    @api.post("/register")
    async def register(request: Request) -> JSONResponse:
        cache = services.policy
        mode = (cache.current() if cache.is_fresh() else await run_in_threadpool(cache.current)).mode
        if mode == "off":
            raise HTTPException(status_code=404)
        if mode == "token" and not await run_in_threadpool(initial_access_token_ok, bearer(request)):
            raise InvalidToken("an initial access token is required to register", headers=BEARER_CHALLENGE)
        parsed = registration.parse(await read_json(request), allow_loopback_http=settings.cimd_allow_loopback_http)
        ip = request.client.host if request.client else None

        def work() -> dict[str, Any]:
            limit, group = settings.registration_rate_limit, address_group(ip)
            if limit and group:
                count = services.limits.hit(f"register:{group}", settings.registration_rate_window)
                if count.count > limit:
                    raise RateLimited("too many registrations from this address; try again later", count.retry_after)
            now = utcnow()
            with services.db.session() as session:
                client, secrets = registration.register(session, parsed, ttl=settings.dynamic_client_ttl, now=now)
                record(session, "client.registered", client_id=client.client_id, ip=ip, name=client.name,
                       redirect_uris=client.redirect_uris, software_id=parsed.software_id)
                return {**registration.describe(client, config_uri(client.client_id)), **secrets}

        return JSONResponse(await run_in_threadpool(work), status_code=201, headers=NO_STORE)

    def authorized(session: Any, request: Request, client_id: str) -> Client:
        """RFC 7592 §2: the registration access token; any doubt is 401 (and says nothing more)."""
        token = bearer(request)
        usable = token and len(client_id) <= 2048 and not has_control_characters(client_id)
        client = session.get(Client, client_id) if usable else None
        if client is None or not client.self_registered or not secret_matches(token or "",
                                                                               client.registration_token_hash):
            raise InvalidToken("invalid registration access token", headers=BEARER_CHALLENGE)
        return client

    @api.get("/register/{client_id}")
    def read(client_id: str, request: Request, services: ServicesDep) -> JSONResponse:
        with services.db.read_session() as session:
            client = authorized(session, request, client_id)
            return JSONResponse(registration.describe(client, config_uri(client_id)), headers=NO_STORE)

    @api.put("/register/{client_id}")
    async def update(client_id: str, request: Request) -> JSONResponse:
        parsed = registration.parse(await read_json(request), allow_loopback_http=settings.cimd_allow_loopback_http)
        ip = request.client.host if request.client else None

        def work() -> dict[str, Any]:
            with services.db.session() as session:
                client = authorized(session, request, client_id)
                if parsed.client_id != client_id:
                    raise InvalidClientMetadata("client_id must be repeated unchanged in an update")
                if parsed.client_secret is not None and not secret_matches(parsed.client_secret, client.secret_hash):
                    raise InvalidClientMetadata("client_secret does not match")
                if parsed.token_endpoint_auth_method != client.token_endpoint_auth_method:
                    raise InvalidClientMetadata("token_endpoint_auth_method cannot be changed")
                registration.apply(client, parsed)
                record(session, "client.updated", client_id=client_id, ip=ip, redirect_uris=client.redirect_uris)
                return registration.describe(client, config_uri(client_id))

        return JSONResponse(await run_in_threadpool(work), headers=NO_STORE)

    @api.delete("/register/{client_id}")
    def delete(client_id: str, request: Request, services: ServicesDep) -> Response:
        ip = request.client.host if request.client else None
        with services.db.session() as session:
            client = authorized(session, request, client_id)
            session.delete(client)
            record(session, "client.deleted", client_id=client_id, ip=ip, by="registration access token")
        return Response(status_code=204, headers=NO_STORE)

    return api
