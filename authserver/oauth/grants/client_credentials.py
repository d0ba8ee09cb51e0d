"""grant_type=client_credentials (OAuth 2.1 §4.2): machine-to-machine, confidential clients only.

The token's subject is the client itself; no refresh token (the client can always ask again).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.errors import InvalidScope, InvalidTarget, UnauthorizedClient
from authserver.oauth.params import Params, resource_param
from authserver.services import Services
from authserver.tokens.issue import token_response


def exchange(session: Session, services: Services, client: Client, params: Params, ip: str | None) -> dict[str, Any]:
    if client.is_public:
        raise UnauthorizedClient("a public client cannot use client_credentials")
    requested = params.optional("resource")
    if requested is None:
        if len(client.resources) != 1:
            raise InvalidTarget("name the resource with the resource parameter")
        requested = client.resources[0]
    uri = resource_param(requested)
    resource = catalog.get_resource(session, uri)
    if resource is None or uri not in client.resources:
        raise InvalidTarget("this client may not request that resource")
    allowed = set(client.scopes) & set(resource.scopes)
    scope = params.optional("scope")
    if scope is None:
        scopes = [s for s in client.default_scopes if s in allowed]
    else:
        scopes = list(dict.fromkeys(scope.split()))
        refused = [s for s in scopes if s not in allowed or s == OFFLINE_ACCESS]
        if refused:
            raise InvalidScope(f"scope {refused[0]!r} is not available to this client for this resource")
    if not scopes:
        raise InvalidScope("no scope requested and the client has no default scope for this resource")
    issued = token_response(session, services, client=client, subject=client.client_id, user_id=None,
                            resource=uri, scopes=scopes, auth_time=None, now=utcnow())
    record(session, "token.issued", actor=client.client_id, client_id=client.client_id, ip=ip,
           grant_type="client_credentials", resource=uri, scopes=scopes, jti=issued.access_jti)
    return issued.body
