"""Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3).

A client uses exactly one method, the one it registered: ``client_secret_basic``,
``client_secret_post`` or ``none`` (public clients send only ``client_id``). Secrets are
compared as SHA-256 digests in constant time.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import unquote

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from authserver.clients.cache import ClientCache, ClientView
from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.errors import InvalidClient, InvalidRequest
from authserver.oauth.params import Params, has_control_characters, read_form, reject_repeated
from authserver.oauth.registry import ClientLookupError, ClientRegistry
from authserver.secrets import secret_matches

BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="authserver", charset="UTF-8"'}


def basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials", headers=BASIC_CHALLENGE) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials", headers=BASIC_CHALLENGE)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    client_id, secret = unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
    if has_control_characters(client_id) or has_control_characters(secret):
        raise InvalidClient("malformed Basic credentials", headers=BASIC_CHALLENGE)
    return client_id, secret


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents: one client_id, its secret (None for ``none``), and the method used."""

    client_id: str
    secret: str | None
    method: str

    @property
    def challenge(self) -> dict[str, str]:
        return BASIC_CHALLENGE if self.method == "client_secret_basic" else {}


def credentials(request: Request, params: Params) -> Credentials:
    basic = basic_credentials(request)
    body_id, body_secret = params.optional("client_id"), params.optional("client_secret")
    if basic and body_secret:
        raise InvalidRequest("use one client authentication method, not several")
    if basic:
        client_id, secret, method = basic[0], basic[1], "client_secret_basic"
        if body_id is not None and body_id != client_id:
            raise InvalidRequest("client_id in the body differs from the authenticated client")
    elif body_secret is not None:
        client_id, secret, method = body_id or "", body_secret, "client_secret_post"
    else:
        client_id, secret, method = body_id or "", None, "none"
    if not client_id:
        raise InvalidClient("client authentication is required")
    return Credentials(client_id, secret, method)


class Registered(Protocol):
    """What authentication reads of a client: the ORM row or its cached view."""

    @property
    def disabled(self) -> bool: ...
    @property
    def token_endpoint_auth_method(self) -> str: ...
    @property
    def secret_hash(self) -> str | None: ...


C = TypeVar("C", bound=Registered)


def verify(client: C | None, given: Credentials) -> C:
    """``client`` (as found for ``given.client_id``) if the credentials prove it, else ``invalid_client``."""
    challenge = given.challenge
    if client is None or client.disabled:
        raise InvalidClient("client authentication failed", detail=f"unknown client {given.client_id!r}",
                            headers=challenge)
    if client.token_endpoint_auth_method != given.method:
        raise InvalidClient("client authentication failed", headers=challenge,
                            detail=f"{given.client_id!r} registered {client.token_endpoint_auth_method}, "
                                   f"used {given.method}")
    if given.secret is not None and not secret_matches(given.secret, client.secret_hash):
        raise InvalidClient("client authentication failed", detail="wrong client secret", headers=challenge)
    return client


def authenticate_client(session: Session, registry: ClientRegistry, request: Request, params: Params) -> Client:
    given = credentials(request, params)
    try:
        client = registry.find(session, given.client_id)
    except ClientLookupError as exc:
        raise InvalidClient(exc.public, headers=given.challenge) from None
    return verify(client, given)


async def authenticate_cached(cache: ClientCache, given: Credentials) -> ClientView:
    """The hot paths' authentication: the client as cached (see ``clients.cache``), never a
    metadata-document client (callers send those through ``authenticate_client``)."""
    client = await cache.get(given.client_id) if len(given.client_id) <= 2048 else None
    if client is not None and client.expires_at is not None and client.expires_at <= utcnow():
        client = None
    return verify(client, given)


async def read_client_request(request: Request, registry: ClientRegistry) -> Params:
    """The form of a client-authenticated endpoint: single-valued parameters, and a metadata-document
    client_id fetched now, before any database transaction is opened."""
    params = await read_form(request)
    reject_repeated(params)
    client_id = params.get("client_id")
    if registry.is_document_url(client_id):
        await run_in_threadpool(registry.prefetch, client_id, request.client.host if request.client else None)
    return params
