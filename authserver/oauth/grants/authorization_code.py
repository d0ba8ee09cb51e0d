"""grant_type=authorization_code (OAuth 2.1 §4.1.3, RFC 7636 §4.6, RFC 8707 §2.2)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from authserver.audit.log import record
from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.errors import CommitThenRaise, InvalidGrant, InvalidRequest, InvalidTarget
from authserver.interaction import consents
from authserver.oauth.params import Params, require, resource_param
from authserver.oauth.pkce import verifier_matches
from authserver.services import Services
from authserver.tokens import codes, refresh
from authserver.tokens.issue import token_response
from authserver.tokens.models import AuthorizationCode
from authserver.users import repository as users

INVALID_CODE = "the authorization code is invalid, expired or already used"


def exchange(session: Session, services: Services, client: Client, params: Params, ip: str | None,
             jkt: str | None = None) -> dict[str, Any]:
    """``jkt``: the request's DPoP key thumbprint (RFC 9449 §5); the tokens are bound to it."""
    code = require(params, "code")
    now = utcnow()
    row = codes.find(session, code)
    if row is None:
        raise InvalidGrant(INVALID_CODE, detail="unknown code")
    if row.used_at is not None:
        if row.dpop_jkt is not None and row.dpop_jkt != jkt:
            # RFC 9449 §10: a bound code could only ever be redeemed with its key, so a replay
            # without that key proves no theft of tokens; revoking them would let whoever copied
            # the used code (history, a Referer, a log) sign the person out.
            raise InvalidGrant(INVALID_CODE, detail="used code replayed without its dpop_jkt key; nothing revoked")
        _replayed(session, row, client, ip)
    if row.client_id != client.client_id:
        raise InvalidGrant(INVALID_CODE, detail=f"code of {row.client_id!r} presented by {client.client_id!r}")
    if row.expires_at <= now:
        raise InvalidGrant(INVALID_CODE, detail="expired code")
    _require_same_redirect_uri(row, params.optional("redirect_uri"))
    verifier = params.optional("code_verifier")
    if verifier is None:
        raise InvalidRequest("code_verifier is required (PKCE)")
    if not verifier_matches(verifier, row.code_challenge):
        raise InvalidGrant("PKCE verification failed")
    _require_same_resource(row, params.optional("resource"))
    _require_bound_key(row, jkt)

    # Locked until this exchange commits: ``grants.disconnect`` locks the same row, so it either
    # committed before (its cut-off refuses the code below) or waits and then finds, and revokes,
    # the refresh family and access token issued here. Unlocked, a disconnect on PostgreSQL could
    # commit between this check and our commit and miss both.
    grant = consents.find(session, row.user_id, row.client_id, row.resource, for_update=True)
    if grant is not None and grant.tokens_revoked_at is not None and grant.tokens_revoked_at >= row.created_at:
        raise InvalidGrant(INVALID_CODE, detail="the person disconnected the app after this code was issued")
    if not codes.consume(session, row, now):
        session.refresh(row)
        _replayed(session, row, client, ip)
    user = users.get(session, row.user_id)
    if user is None or user.disabled:
        raise InvalidGrant(INVALID_CODE, detail="the user is gone or disabled")

    issued = token_response(session, services, client=client, subject=str(user.id), user_id=user.id,
                            resource=row.resource, scopes=row.scopes, auth_time=row.auth_time, now=now,
                            stay_connected=row.stay_connected, jkt=jkt, amr=row.amr)
    codes.record_issued(session, row.code_hash, issued.access_jti, issued.access_expires_at, issued.family_id)
    consents.touch(session, user.id, client.client_id, row.resource, now)
    record(session, "token.issued", actor=str(user.id), client_id=client.client_id, ip=ip,
           grant_type="authorization_code", resource=row.resource, scopes=row.scopes, jti=issued.access_jti,
           refresh_token="refresh_token" in issued.body)
    return issued.body


def _replayed(session: Session, row: AuthorizationCode, client: Client, ip: str | None) -> None:
    """RFC 6749 §4.1.2: a code used twice revokes what it issued."""
    now = utcnow()
    if row.family_id is not None:
        refresh.revoke_family(session, row.family_id, now)
    if row.access_jti and row.access_expires_at:
        refresh.deny_access_token(session, row.access_jti, row.access_expires_at, now)
    record(session, "code.replayed", actor=str(row.user_id), client_id=client.client_id, ip=ip,
           code_client_id=row.client_id, revoked_family=str(row.family_id) if row.family_id else None)
    raise CommitThenRaise(InvalidGrant(INVALID_CODE, detail="code replayed; tokens it issued are revoked"))


def _require_same_redirect_uri(row: AuthorizationCode, given: str | None) -> None:
    """OAuth 2.1 §4.1.3: required and identical when the authorization request carried one."""
    if row.redirect_uri_given and given is None:
        raise InvalidRequest("redirect_uri is required: the authorization request included it")
    if given is not None and given != row.redirect_uri:
        raise InvalidGrant("redirect_uri differs from the authorization request")


def _require_bound_key(row: AuthorizationCode, jkt: str | None) -> None:
    """RFC 9449 §10: a code requested with ``dpop_jkt`` is redeemed only with a proof of that key.

    Checked before the code is spent: whoever stole the code but lacks the key cannot burn it.
    """
    if row.dpop_jkt is not None and row.dpop_jkt != jkt:
        raise InvalidGrant("the authorization code is bound to another DPoP key (dpop_jkt)",
                           detail=f"code bound to {row.dpop_jkt}, proof key {jkt}")


def _require_same_resource(row: AuthorizationCode, given: str | None) -> None:
    if given is not None and resource_param(given) != row.resource:
        raise InvalidTarget("the resource differs from the one the person approved")
