"""Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3).

A client uses exactly one method, the one it registered: ``client_secret_basic``,
``client_secret_post`` or ``none`` (public clients send only ``client_id``). Secrets are
compared as SHA-256 digests in constant time.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from authserver.clients.models import Client
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


def authenticate_client(session: Session, registry: ClientRegistry, request: Request, params: Params) -> Client:
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

    challenge = BASIC_CHALLENGE if method == "client_secret_basic" else {}
    try:
        client = registry.find(session, client_id)
    except ClientLookupError as exc:
        raise InvalidClient(exc.public, headers=challenge) from None
    if client is None or client.disabled:
        raise InvalidClient("client authentication failed", detail=f"unknown client {client_id!r}", headers=challenge)
    if client.token_endpoint_auth_method != method:
        raise InvalidClient("client authentication failed", headers=challenge,
                            detail=f"{client_id!r} registered {client.token_endpoint_auth_method}, used {method}")
    if secret is not None and not secret_matches(secret, client.secret_hash):
        raise InvalidClient("client authentication failed", detail="wrong client secret", headers=challenge)
    return client


async def read_client_request(request: Request, registry: ClientRegistry) -> Params:
    """The form of a client-authenticated endpoint: single-valued parameters, and a metadata-document
    client_id fetched now, before any database transaction is opened."""
    params = await read_form(request)
    reject_repeated(params)
    client_id = params.get("client_id")
    if registry.is_document_url(client_id):
        await run_in_threadpool(registry.prefetch, client_id)
    return params
