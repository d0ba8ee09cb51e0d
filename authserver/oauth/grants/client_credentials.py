"""grant_type=client_credentials (OAuth 2.1 §4.2): machine-to-machine, confidential clients only.

The token's subject is the client itself; no refresh token (the client can always ask again).
This grant writes nothing: the client and resource come from the hot-path caches
(``clients.cache``, ``catalog.cache``), the token is a signed JWT, and its ``token.issued``
event goes to the batched audit buffer (``audit.buffer``). So it runs on the event loop and
waits on the database only when a cache period has ended.
"""

from __future__ import annotations

from typing import Any

from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients.cache import ClientView
from authserver.db import utcnow
from authserver.errors import InvalidScope, InvalidTarget, UnauthorizedClient
from authserver.oauth.params import Params, resource_param, scope_tokens
from authserver.services import Services
from authserver.tokens.issue import access_token_response


async def exchange(services: Services, client: ClientView, params: Params, ip: str | None,
                   jkt: str | None = None) -> dict[str, Any]:
    """``jkt``: the request's DPoP key thumbprint; the access token is bound to it."""
    if client.is_public:
        raise UnauthorizedClient("a public client cannot use client_credentials")
    requested = params.optional("resource")
    if requested is None:
        if len(client.resources) != 1:
            raise InvalidTarget("name the resource with the resource parameter")
        requested = client.resources[0]
    uri = resource_param(requested)
    resource_scopes = await services.resources.scopes(uri) if uri in client.resources else None
    if resource_scopes is None:
        raise InvalidTarget("this client may not request that resource")
    allowed = set(client.scopes) & set(resource_scopes)
    scope = params.optional("scope")
    if scope is None:
        scopes = [s for s in client.default_scopes if s in allowed]
    else:
        scopes = scope_tokens(scope)
        refused = [s for s in scopes if s not in allowed or s == OFFLINE_ACCESS]
        if refused:
            raise InvalidScope(f"scope {refused[0]!r} is not available to this client for this resource")
    if not scopes:
        raise InvalidScope("no scope requested and the client has no default scope for this resource")
    await services.keys.fresh()
    now = utcnow()
    access, body = access_token_response(services, client_id=client.client_id, subject=client.client_id,
                                         resource=uri, scopes=scopes, auth_time=None, now=now, jkt=jkt)
    services.audit.record("token.issued", actor=client.client_id, client_id=client.client_id, ip=ip, at=now,
                          grant_type="client_credentials", resource=uri, scopes=scopes, jti=access.jti)
    return body
