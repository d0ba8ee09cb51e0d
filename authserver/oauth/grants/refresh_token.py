"""grant_type=refresh_token (OAuth 2.1 §4.3, §6.1): rotation with reuse detection.

Every use rotates. The claim on a token is one conditional UPDATE, so exactly one of
several racing requests (threads, processes, nodes) wins. A rotated token coming back
revokes the whole family, except the benign race: the same client presenting it within
``refresh_reuse_grace`` seconds, while the successor is unused, gets that same
successor response again (two tabs or workers refreshing at once must not sign the
person out). That response is kept sealed with AES-GCM only for the grace window.

Two paths, one set of rules:

* ``rotate``, the usual case: the client comes from the client cache (``clients.cache``, at
  most ``AUTHSERVER_CACHE_SECONDS`` old, as for ``client_credentials``); the token's row is read
  with its user's and resource's current state joined in; the successor (refresh token, signed
  access token, sealed response) is built before anything is written; then one atomic write
  claims the token and stores the successor (``tokens.refresh.rotate``). Its ``token.refreshed``
  event goes to the batched audit buffer (``audit.buffer``: written within
  ``AUTHSERVER_AUDIT_FLUSH_SECONDS``, and on shutdown).
* ``exchange``, everything else, in one ORM unit of work: a token that does not look usable
  (unknown, another client's, expired, rotated: reuse or the grace window; revoked), whose user
  or resource is gone or disabled (the family is revoked), a claim that lost a race, and
  metadata-document clients. It claims again itself, so it decides exactly as before.

DPoP (RFC 9449 §5): a family bound to a key (a public client's, started with a proof) is
refreshed only with a proof of that key. Any other key, or none, is ``invalid_grant`` and
changes nothing: the token is useless without the key, and letting whoever holds a copy of it
revoke the family would hand a thief without the key a way to sign the person out. The
binding is checked before the grace window hands out a successor response, too.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients.cache import ClientView
from authserver.clients.models import Client
from authserver.db import affected, utcnow
from authserver.errors import CommitThenRaise, InvalidGrant, InvalidScope, InvalidTarget
from authserver.oauth.params import Params, require, resource_param, scope_tokens
from authserver.secrets import hash_secret
from authserver.services import Services
from authserver.tokens import refresh
from authserver.tokens.issue import Issued, issue, token_response
from authserver.tokens.models import RefreshToken
from authserver.users import repository as users

INVALID = "the refresh token is invalid, expired or revoked"


async def rotate(services: Services, client: ClientView, params: Params, ip: str | None,
                 jkt: str | None = None) -> dict[str, Any] | None:
    """The token response of the usual rotation, or None when ``exchange`` must decide (see the module)."""
    token = require(params, "refresh_token")
    if len(token) > 100:
        return None
    await services.keys.fresh()  # signing in the thread below then never reads the key ring
    return await run_in_threadpool(_rotate, services, client, token, params, ip, jkt)


def _rotate(services: Services, client: ClientView, token: str, params: Params,
            ip: str | None, jkt: str | None) -> dict[str, Any] | None:
    now = utcnow()
    token_hash = hash_secret(token)

    def prepare(presented: refresh.Presented) -> refresh.Successor[tuple[Issued, list[str]]] | None:
        grant = presented.grant
        # The same checks, in the same order, as ``exchange``; what would revoke the family is left to it.
        if not presented.looks_live(client.client_id, now) or grant.dpop_jkt not in (None, jkt):
            return None
        if presented.resource_scopes is None or not client.may_use_resource(grant.resource):
            return None
        scopes = _narrowed_scopes(client, grant.scopes, presented.resource_scopes, params.optional("scope"))
        _require_same_resource(grant.resource, params.optional("resource"))
        if grant.user_id is not None and (not presented.user_found or presented.user_disabled):
            return None
        issued = issue(services, client=client, subject=str(grant.user_id or client.client_id),
                       user_id=grant.user_id, resource=grant.resource, scopes=scopes, auth_time=grant.auth_time,
                       now=now, family=grant, jkt=jkt, amr=grant.amr)
        assert issued.refresh_row is not None  # the endpoint checked that the client has the refresh grant
        return refresh.Successor(row=issued.refresh_row, response=_sealed(services, issued.body, token_hash),
                                 result=(issued, scopes))

    won = refresh.rotate(services.db, token_hash, client_id=client.client_id, now=now, prepare=prepare)
    if won is None:
        return None
    issued, scopes = won
    row = issued.refresh_row
    assert row is not None
    user_id = row["user_id"]
    services.audit.record("token.refreshed", actor=str(user_id) if user_id else None, client_id=client.client_id,
                          ip=ip, at=now, family=str(row["family_id"]), resource=row["resource"], scopes=scopes,
                          jti=issued.access_jti)
    return issued.body


def _sealed(services: Services, body: dict[str, Any], token_hash: str) -> bytes | None:
    """The successor response as kept for the grace window (bound to the rotated token's row)."""
    if services.settings.refresh_reuse_grace <= 0:
        return None
    return services.grace_sealer.encrypt(json.dumps(body).encode(), token_hash.encode())


def exchange(session: Session, services: Services, client: Client, params: Params, ip: str | None,
             jkt: str | None = None) -> dict[str, Any]:
    token = require(params, "refresh_token")
    now = utcnow()
    token_hash = hash_secret(token)
    bound_to_this_key = (RefreshToken.dpop_jkt.is_(None) if jkt is None
                         else or_(RefreshToken.dpop_jkt.is_(None), RefreshToken.dpop_jkt == jkt))
    claimed = affected(session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.client_id == client.client_id,
               RefreshToken.rotated_at.is_(None), RefreshToken.revoked_at.is_(None),
               RefreshToken.expires_at > now, RefreshToken.family_expires_at > now, bound_to_this_key)
        .values(rotated_at=now)
    )) == 1
    row = session.get(RefreshToken, token_hash, populate_existing=True) if len(token) <= 100 else None
    if not claimed:
        return _not_claimed(session, services, client, row, ip, jkt)
    assert row is not None

    resource = catalog.get_resource(session, row.resource)
    if resource is None or not client.may_use_resource(row.resource):
        # The operator removed the resource or the client's access to it: the grant ends here.
        refresh.revoke_family(session, row.family_id, now)
        raise CommitThenRaise(InvalidGrant(INVALID, detail="resource gone or no longer allowed for the client"))
    scopes = _narrowed_scopes(client, row.scopes, resource.scopes, params.optional("scope"))
    _require_same_resource(row.resource, params.optional("resource"))
    user = users.get(session, row.user_id) if row.user_id else None
    if row.user_id is not None and (user is None or user.disabled):
        refresh.revoke_family(session, row.family_id, now)
        raise CommitThenRaise(InvalidGrant(INVALID, detail="the user is gone or disabled"))

    family = refresh.RefreshGrant(family_id=row.family_id, client_id=row.client_id, user_id=row.user_id,
                                  scopes=row.scopes, resource=row.resource, auth_time=row.auth_time,
                                  family_expires_at=row.family_expires_at, dpop_jkt=row.dpop_jkt, amr=row.amr)
    issued = token_response(session, services, client=client, subject=str(row.user_id or client.client_id),
                            user_id=row.user_id, resource=row.resource, scopes=scopes, auth_time=row.auth_time,
                            now=now, family=family, jkt=jkt, amr=row.amr)
    row.successor_response = _sealed(services, issued.body, token_hash)
    record(session, "token.refreshed", actor=str(row.user_id) if row.user_id else None, client_id=client.client_id,
           ip=ip, family=str(row.family_id), resource=row.resource, scopes=scopes, jti=issued.access_jti)
    return issued.body


def _not_claimed(session: Session, services: Services, client: Client, row: RefreshToken | None,
                 ip: str | None, jkt: str | None) -> dict[str, Any]:
    """Why the token could not be claimed: unknown, not this client's, another DPoP key's, dead, or reused."""
    now = utcnow()
    if row is None or row.client_id != client.client_id:
        raise InvalidGrant(INVALID, detail="unknown refresh token or another client's")
    if row.dpop_jkt is not None and row.dpop_jkt != jkt:
        raise InvalidGrant("the refresh token is bound to a DPoP key; send a proof made with that key",
                           detail=f"bound to {row.dpop_jkt}, proof key {jkt}")
    if row.revoked_at is not None or row.rotated_at is None:
        raise InvalidGrant(INVALID, detail="revoked or expired refresh token")
    grace = services.settings.refresh_reuse_grace
    if grace > 0 and row.successor_response and now - row.rotated_at <= timedelta(seconds=grace):
        body: dict[str, Any] = json.loads(services.grace_sealer.decrypt(row.successor_response,
                                                                         row.token_hash.encode()))
        successor = refresh.find(session, body.get("refresh_token", ""))
        if successor is not None and successor.rotated_at is None and successor.revoked_at is None:
            record(session, "token.refresh_race", client_id=client.client_id, ip=ip, family=str(row.family_id))
            return body
    revoked = refresh.revoke_family(session, row.family_id, now)
    record(session, "token.reuse_detected", actor=str(row.user_id) if row.user_id else None,
           client_id=client.client_id, ip=ip, family=str(row.family_id), revoked=revoked)
    raise CommitThenRaise(InvalidGrant(INVALID, detail="rotated refresh token reused; family revoked"))


def _narrowed_scopes(client: Client | ClientView, granted: list[str], resource_scopes: list[str],
                     requested: str | None) -> list[str]:
    """A refresh may narrow the scope, never widen it (RFC 6749 §6); allow-lists may have shrunk since."""
    still_allowed = client.scopes_at(resource_scopes)
    still_allowed.add(OFFLINE_ACCESS)
    if requested is None or not requested.strip():
        return [s for s in granted if s in still_allowed]
    names = scope_tokens(requested)
    widened = [n for n in names if n not in granted]
    if widened:
        raise InvalidScope(f"scope {widened[0]!r} was not granted; a refresh cannot widen the scope")
    return [n for n in names if n in still_allowed]


def _require_same_resource(granted: str, given: str | None) -> None:
    if given is not None and resource_param(given) != granted:
        raise InvalidTarget("a refresh cannot change the resource the grant was made for")
