"""Building a token response: an access token, and a refresh token when the client may refresh."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients.cache import ClientView
from authserver.clients.models import Client
from authserver.services import Services
from authserver.tokens import refresh
from authserver.tokens.access import IssuedAccessToken, issue_access_token
from authserver.tokens.models import RefreshToken


def access_token_response(services: Services, *, client_id: str, subject: str, resource: str, scopes: list[str],
                          auth_time: datetime | None, now: datetime, jkt: str | None = None,
                          amr: list[str] | None = None) -> tuple[IssuedAccessToken, dict[str, Any]]:
    """A signed access token and the token response carrying it; notes the client's use (coarse, batched).

    ``jkt``: the thumbprint of the request's DPoP key; the token is bound to it (``cnf.jkt``,
    RFC 9449 §6) and its type is ``DPoP`` (§5). ``amr``: RFC 8176 methods of the person's sign-in
    (``mfa.totp``), a claim of the token when known.
    """
    settings = services.settings
    services.audit.client_used(client_id, now)
    access = issue_access_token(
        services.keys, issuer=settings.issuer, subject=subject, audience=resource, client_id=client_id,
        scopes=[s for s in scopes if s != OFFLINE_ACCESS], ttl=settings.access_token_ttl, now=int(now.timestamp()),
        auth_time=int(auth_time.timestamp()) if auth_time else None,
        extra={**({"cnf": {"jkt": jkt}} if jkt else {}), **({"amr": amr} if amr else {})} or None,
    )
    body: dict[str, Any] = {
        "access_token": access.token, "token_type": "DPoP" if jkt else "Bearer", "expires_in": access.expires_in,
        "scope": " ".join(scopes),
    }
    return access, body


@dataclass(frozen=True)
class Issued:
    body: dict[str, Any]
    access_jti: str
    access_expires_at: datetime
    family_id: uuid.UUID | None
    # The column values of the refresh token's row, when one was issued (``token_response`` stores it).
    refresh_row: dict[str, Any] | None = None


def token_response(session: Session, services: Services, *, client: Client, subject: str,
                   user_id: uuid.UUID | None, resource: str, scopes: list[str], auth_time: datetime | None,
                   now: datetime, family: refresh.RefreshGrant | None = None,
                   stay_connected: bool = False, jkt: str | None = None, amr: list[str] | None = None) -> Issued:
    """Issue tokens (see ``issue``) and add the new refresh token's row to the session."""
    issued = issue(services, client=client, subject=subject, user_id=user_id, resource=resource, scopes=scopes,
                   auth_time=auth_time, now=now, family=family, stay_connected=stay_connected, jkt=jkt, amr=amr)
    if issued.refresh_row is not None:
        session.add(RefreshToken(**issued.refresh_row))
    return issued


def issue(services: Services, *, client: Client | ClientView, subject: str, user_id: uuid.UUID | None,
          resource: str, scopes: list[str], auth_time: datetime | None, now: datetime,
          family: refresh.RefreshGrant | None = None, stay_connected: bool = False,
          jkt: str | None = None, amr: list[str] | None = None) -> Issued:
    """Issue tokens, storing nothing. ``family`` continues an existing refresh family (rotation); else one starts.

    The refresh-token rule: a new family starts when the client may use the refresh grant
    and the person left "Stay connected" ticked on the consent page (``stay_connected``,
    carried by the code). Asking for ``offline_access`` is not needed: many MCP clients
    (the TypeScript SDK among them) never do, and would otherwise send the person back
    through sign-in whenever the short-lived access token expires.

    DPoP (``jkt``, the proof key's thumbprint): the access token is bound to the key. A new
    family of a public client is bound to it too (RFC 9449 §5: a public client's refresh token
    is worth nothing without the key); a confidential client's is not (it authenticates
    anyway, §5). A continued family keeps the binding it started with.
    """
    settings = services.settings
    access, body = access_token_response(services, client_id=client.client_id, subject=subject, resource=resource,
                                         scopes=scopes, auth_time=auth_time, now=now, jkt=jkt, amr=amr)
    access_expires_at = now + timedelta(seconds=access.expires_in)
    family_id = None
    row = None
    if (family is not None or stay_connected) and "refresh_token" in client.grant_types:
        grant = family or refresh.RefreshGrant(
            family_id=uuid.uuid4(), client_id=client.client_id, user_id=user_id, scopes=scopes,
            resource=resource, auth_time=auth_time,
            family_expires_at=now + timedelta(seconds=settings.refresh_absolute_ttl),
            dpop_jkt=jkt if client.is_public else None, amr=amr,
        )
        body["refresh_token"], row = refresh.new_row(grant, now=now, idle_ttl=settings.refresh_idle_ttl,
                                                     access_jti=access.jti, access_expires_at=access_expires_at)
        family_id = grant.family_id
    return Issued(body, access.jti, access_expires_at, family_id, row)
