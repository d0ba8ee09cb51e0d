"""Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3).

A client uses exactly one method, the one it registered: ``client_secret_basic``,
``client_secret_post``, ``private_key_jwt`` (a signed assertion, see ``client_assertion``) or
``none`` (public clients send only ``client_id``). Secrets are compared as SHA-256 digests in
constant time. A request presenting two methods at once is refused (``invalid_request``).

A client with an IP allow-list (``allowed_ips``, set by the operator) is refused with
``invalid_client`` from any other address, whatever its credentials, and the refusal is audited
(``client_auth.refused``). The address is the connection's, or the one a trusted proxy forwarded
(``AUTHSERVER_TRUSTED_PROXIES``, see ``net``). An empty list costs nothing: the check is one
tuple test on the cached client view.
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
from authserver.net import Network
from authserver.oauth import client_assertion
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
    ip: str | None = None
    # private_key_jwt: whether ClientAssertions.prove checked this request's assertion.
    proven: bool = False

    @property
    def challenge(self) -> dict[str, str]:
        return BASIC_CHALLENGE if self.method == "client_secret_basic" else {}


def credentials(request: Request, params: Params) -> Credentials:
    ip = request.client.host if request.client else None
    if client_assertion.presented(params):
        if params.optional("client_secret") is not None or request.headers.get("authorization"):
            raise InvalidRequest("use one client authentication method, not several")
        client_id = client_assertion.unverified_client_id(params)
        return Credentials(client_id, None, client_assertion.METHOD, ip,
                           proven=client_assertion.proven_client(request) == client_id)
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
    return Credentials(client_id, secret, method, ip)


class Registered(Protocol):
    """What authentication reads of a client: the ORM row or its cached view."""

    @property
    def disabled(self) -> bool: ...
    @property
    def token_endpoint_auth_method(self) -> str: ...
    @property
    def secret_hash(self) -> str | None: ...
    @property
    def allowed_networks(self) -> tuple[Network, ...]: ...


C = TypeVar("C", bound=Registered)


def verify(client: C | None, given: Credentials) -> C:
    """``client`` (as found for ``given.client_id``) if the credentials prove it, else ``invalid_client``."""
    challenge = given.challenge
    if client is None or client.disabled:
        raise InvalidClient("client authentication failed", detail=f"unknown client {given.client_id!r}",
                            headers=challenge)
    if client.allowed_networks and not client_assertion.allowed_from(client.allowed_networks, given.ip):
        raise InvalidClient("client authentication failed", headers=challenge,
                            detail=f"{given.client_id!r} may not authenticate from {given.ip}",
                            audit={"event": "client_auth.refused", "client_id": given.client_id, "ip": given.ip,
                                   "reason": "address not allowed"})
    if client.token_endpoint_auth_method != given.method:
        raise InvalidClient("client authentication failed", headers=challenge,
                            detail=f"{given.client_id!r} registered {client.token_endpoint_auth_method}, "
                                   f"used {given.method}")
    if given.method == client_assertion.METHOD and not given.proven:
        raise InvalidClient("client authentication failed", detail="client assertion not checked")
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


async def read_client_request(request: Request, registry: ClientRegistry,
                              assertions: client_assertion.ClientAssertions) -> Params:
    """The form of a client-authenticated endpoint: single-valued parameters, a metadata-document
    client_id fetched now, and a client assertion checked now, before any database transaction is
    opened (see ``client_assertion``)."""
    params = await read_form(request)
    reject_repeated(params)
    client_id = params.get("client_id")
    assertion = client_assertion.presented(params)  # the secret and public clients' path stays as it was
    if client_id is None and assertion:
        client_id = client_assertion.unverified_client_id(params)
    if registry.is_document_url(client_id):
        await run_in_threadpool(registry.prefetch, client_id, request.client.host if request.client else None)
    if assertion:
        await assertions.prove(request, params, registry)
    return params
