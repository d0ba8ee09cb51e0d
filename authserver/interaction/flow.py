"""The authorization request as a state machine: created → authenticated → consented → done.

It lives server side with a 10-minute expiry; the browser holds an opaque id and a
binding cookie. ``finish`` moves it to ``done`` with a conditional UPDATE, so it can
be completed once, whatever the number of clicks, tabs or server nodes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.catalog.models import Resource
from authserver.clients.models import Client
from authserver.db import affected, utcnow
from authserver.errors import ErrorPage, append_query
from authserver.interaction import consents
from authserver.interaction.models import AuthorizationRequest
from authserver.net import address_group
from authserver.oauth.authorize import AuthorizationParams
from authserver.secrets import hash_secret, new_secret
from authserver.settings import Settings
from authserver.tokens import codes
from authserver.uris import identifies_client
from authserver.web.i18n import N_

CREATED, AUTHENTICATED, DONE = "created", "authenticated", "done"


TOO_MANY_PENDING = ErrorPage(
    N_("Too many sign-ins in progress"),
    N_("Too many sign-in requests were started from your network and not finished. Finish or close the ones "
       "you have open, wait a few minutes, then go back to the application and try again."), status_code=429,
    detail="pending authorization requests per address at the limit")


@dataclass(frozen=True)
class PendingLimits:
    """Unfinished, unexpired requests allowed per browser and per address group (see ``start``)."""

    per_browser: int
    per_ip: int


def start(session: Session, params: AuthorizationParams, browser_id: str, ttl: int, *, ip: str | None = None,
          limits: PendingLimits | None = None) -> tuple[str, AuthorizationRequest]:
    """Store a new request. Each is stored before anyone signs in, so what one party can keep
    pending is bounded, counted in the shared database (holds across nodes; two concurrent
    requests may both pass a count at the limit, which overshoots by at most the concurrency):

    * per browser: a person with many tabs keeps working, the oldest unfinished request is
      dropped (deleted: that tab shows "unknown request", see ``load``, and is started again
      from the app);
    * per address group (IPv4 address, IPv6 /64): a caller who drops the browser cookie to get a
      fresh browser each time meets ``TOO_MANY_PENDING`` (429) instead.
    """
    rid = new_secret(24)
    now = utcnow()
    browser_hash = hash_secret(browser_id)
    group = address_group(ip)
    if limits is not None:
        pending = (AuthorizationRequest.status != DONE) & (AuthorizationRequest.expires_at > now)
        if group is not None:
            count = session.scalar(select(func.count()).select_from(AuthorizationRequest).where(
                AuthorizationRequest.ip_group == group, pending)) or 0
            if count >= limits.per_ip:
                raise TOO_MANY_PENDING
        oldest_beyond = list(session.scalars(
            select(AuthorizationRequest.id_hash).where(AuthorizationRequest.browser_hash == browser_hash, pending)
            .order_by(AuthorizationRequest.created_at.desc(), AuthorizationRequest.id_hash)
            .offset(limits.per_browser - 1)))
        if oldest_beyond:
            session.execute(delete(AuthorizationRequest).where(AuthorizationRequest.id_hash.in_(oldest_beyond)))
    row = AuthorizationRequest(
        id_hash=hash_secret(rid), client_id=params.client.client_id, redirect_uri=params.redirect_uri,
        redirect_uri_given=params.redirect_uri_given, state=params.state, scopes=params.scopes,
        resource=params.resource.uri, code_challenge=params.code_challenge, dpop_jkt=params.dpop_jkt,
        prompt=" ".join(sorted(params.prompt)) or None, browser_hash=browser_hash, ip_group=group,
        created_at=now, expires_at=now + timedelta(seconds=ttl),
    )
    session.add(row)
    session.flush()
    return rid, row


EXPIRED = ErrorPage(N_("This request has expired"),
                    N_("This sign-in request is no longer valid. Go back to the application and start again."))
UNKNOWN = ErrorPage(N_("Unknown request"),
                    N_("This server has no sign-in request at this address. The link may be incomplete, or the "
                       "request ended long enough ago to be forgotten. Go back to the application and start again."),
                    status_code=404, detail="no authorization request has this id")


def load(session: Session, rid: str, browser_id: str | None) -> AuthorizationRequest:
    """The live request this browser started; anything else is an error page, never a redirect.

    "Unknown" or "expired" is decided from what is stored, nothing else. The browser holds the
    id; we keep only its SHA-256 hash, and the row stays until its expiry has passed and the next
    purge runs (``AUTHSERVER_PURGE_INTERVAL``, or ``authserver db purge``), or until newer requests
    of the same browser push it out (``start``). So:

    * a row we still hold that is finished (``done``: answered, or a second click) or past its
      expiry is ``EXPIRED``, whichever browser asks;
    * an id whose hash matches no row is ``UNKNOWN`` (404): made up or mistyped, or a request
      whose row is already gone. A long-expired request is "unknown" once purged; we do not keep
      rows, or remember hashes, only to call them "expired" later.

    Neither answer tells anything a guesser could use: it depends only on the id presented, a
    192-bit random value, so learning that one exists means already holding it; neither page
    names the client or the person of the request. A live request asked for by another browser
    is refused as such (the binding cookie), so a leaked id is useless elsewhere.
    """
    row = session.get(AuthorizationRequest, hash_secret(rid)) if 0 < len(rid) <= 100 else None
    if row is None:
        raise UNKNOWN
    if row.status == DONE or row.expires_at <= utcnow():
        raise EXPIRED
    if browser_id is None or hash_secret(browser_id) != row.browser_hash:
        raise ErrorPage(N_("Request from another browser"),
                        N_("This sign-in request was started in another browser or window. "
                           "Go back to the application and start again."), status_code=403,
                        detail="browser binding cookie missing or different")
    return row


def authenticate(row: AuthorizationRequest, user_id: uuid.UUID, auth_time: datetime,
                 amr: list[str] | None = None) -> None:
    row.user_id = user_id
    row.auth_time = auth_time
    row.amr = amr
    row.status = AUTHENTICATED


@dataclass(frozen=True)
class ConsentNeed:
    """What the consent page must ask: the new scopes, and those already allowed before.

    ``forced`` (prompt=consent) shows the page even when nothing is new, yet keeps what was
    allowed before apart, so a step-up still asks only for what is new (MCP clients send
    prompt=consent whenever they ask for offline_access).
    """

    new: list[str]
    already: list[str]
    forced: bool = False
    # No remembered consent at all (first time, or disconnected since): the page is always shown.
    first: bool = False
    # The remembered "Stay connected" choice, used when no page is shown.
    stay_connected: bool = True
    # The client cannot be told apart from an impersonator (``needs_confirmation``): even a fully
    # remembered consent is only used after the person confirms, on a one-click page.
    unidentified: bool = False

    @property
    def needed(self) -> bool:
        return self.asks or self.unidentified

    @property
    def asks(self) -> bool:
        """The full consent page is due (something to decide, not only to confirm)."""
        return bool(self.new) or self.forced or self.first

    @property
    def confirm_only(self) -> bool:
        """Everything was allowed before; the person only confirms it is really this app."""
        return self.unidentified and not self.asks


def needs_confirmation(client: Client, redirect_uri: str) -> bool:
    """RFC 8252 §8.6: a public client whose code goes to a loopback redirect cannot be identified.

    Any program on the person's computer can present its ``client_id`` with a port and PKCE pair
    of its own, so remembered consent alone would hand that program the person's access silently.
    A public client redirecting to an https host it controls is identified by that redirect (only
    that host receives the code); a confidential client by its credentials. No custom-scheme
    redirect is ever registered here (``uris.check_redirect_uri``); it would count as loopback.
    """
    return client.is_public and not identifies_client(redirect_uri)


def consent_need(session: Session, row: AuthorizationRequest, client: Client | None = None) -> ConsentNeed:
    """``offline_access`` is no permission to list: it is the "Stay connected" choice, asked on
    every consent page of a client that may refresh and remembered with the consent."""
    assert row.user_id is not None
    client = client or session.get(Client, row.client_id)
    remembered = consents.find(session, row.user_id, row.client_id, row.resource)
    before = {s for s in remembered.scopes if s != catalog.OFFLINE_ACCESS} if remembered else set()
    scopes = [s for s in row.scopes if s != catalog.OFFLINE_ACCESS]
    return ConsentNeed(new=[s for s in scopes if s not in before],
                       already=[s for s in scopes if s in before],
                       forced="consent" in (row.prompt or "").split(),
                       first=not before,
                       stay_connected=remembered.stay_connected if remembered else True,
                       unidentified=client is None or needs_confirmation(client, row.redirect_uri))


def finish_with_code(session: Session, settings: Settings, row: AuthorizationRequest, scopes: list[str],
                     ip: str | None, *, stay_connected: bool) -> str:
    """Issue the code and return where to send the browser.

    ``stay_connected``: the person's choice; the code carries it to the token request, where
    a client allowed the refresh grant then gets a refresh token.
    """
    mark_done(session, row)
    assert row.user_id is not None and row.auth_time is not None
    code = codes.create(session, codes.CodeGrant(
        client_id=row.client_id, user_id=row.user_id, redirect_uri=row.redirect_uri,
        redirect_uri_given=row.redirect_uri_given, code_challenge=row.code_challenge, resource=row.resource,
        scopes=scopes, auth_time=row.auth_time, stay_connected=stay_connected, dpop_jkt=row.dpop_jkt,
        amr=row.amr,
    ), settings.code_ttl)
    record(session, "code.issued", actor=str(row.user_id), client_id=row.client_id, ip=ip,
           resource=row.resource, scopes=scopes, stay_connected=stay_connected)
    params = {"code": code}
    if row.state is not None:
        params["state"] = row.state
    params["iss"] = settings.issuer  # RFC 9207
    return append_query(row.redirect_uri, params)


def finish_with_error(session: Session, settings: Settings, row: AuthorizationRequest, error: str,
                      description: str) -> str:
    mark_done(session, row)
    params = {"error": error, "error_description": description}
    if row.state is not None:
        params["state"] = row.state
    params["iss"] = settings.issuer
    return append_query(row.redirect_uri, params)


def mark_done(session: Session, row: AuthorizationRequest) -> None:
    result = session.execute(update(AuthorizationRequest)
                             .where(AuthorizationRequest.id_hash == row.id_hash, AuthorizationRequest.status != DONE)
                             .values(status=DONE))
    if affected(result) != 1:
        raise EXPIRED


@dataclass(frozen=True)
class ConsentView:
    client: Client
    resource: Resource
    new_scopes: list[tuple[str, str, bool]]  # (name, description, write)
    already: list[tuple[str, str, bool]]
    # The client may use refresh tokens: the page offers "Stay connected" (ticked by default).
    may_stay_connected: bool


def describe(session: Session, client: Client, resource: Resource, need: ConsentNeed) -> ConsentView:
    registered = catalog.get_scopes(session, [*need.new, *need.already])

    def rows(names: list[str]) -> list[tuple[str, str, bool]]:
        out = [(name, registered[name].description, registered[name].write) for name in names]
        # Write scopes first: what can change or delete things must be read before the rest.
        return sorted(out, key=lambda r: not r[2])

    return ConsentView(client, resource, rows(need.new), rows(need.already),
                       may_stay_connected="refresh_token" in client.grant_types)

