"""Console section: clients (``/admin/clients``).

List (search, kind and state filters, 50 a page) → detail → edit form; confirmation pages for
rotating a secret, disabling and deleting; a bulk clean-up of stale self-registered clients.
Every change goes through ``clients.repository`` (the rules of creation apply to edits too) and
is an audit event in the same transaction, and ends with a flash message on the next page.

A client is named by a query parameter (``?client_id=``), not a path segment: metadata-document
clients have URLs as ids, and an id ending in ``/edit`` must not be mistaken for an action.

A new secret (a created confidential client, a rotation, an edit making a client confidential)
is shown once, on the page answering the POST, and never again: only its hash is stored. That
page is not a redirect, since the secret must not travel through a URL or a cookie.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.admin import common
from authserver.admin.audit_log import event_rows, printable
from authserver.audit import queries as audit_queries
from authserver.audit.queries import AuditFilter
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.clients.jwks import ALGORITHMS
from authserver.clients.models import GRANT_TYPES, Client
from authserver.clients.repository import ClientQuery, NewClient
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import AppError, ErrorPage, FieldError, NotFound
from authserver.grants import service as grants
from authserver.interaction.cookies import Cookies
from authserver.oauth.params import Params
from authserver.services import Services
from authserver.web import pages
from authserver.web.pages import SignedIn

PAGE_SIZE = 50
RECENT_EVENTS = 20
KIND_LABELS = {"static": "pre-registered", "dynamic": "dynamically registered", "metadata": "metadata document"}
STATE_LABELS = {"active": "active", "disabled": "disabled", "unused": "never used"}
FORM_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
# Clean-up ages: how long a self-registered client must have existed, unused, to go.
CLEANUP_AGES = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7),
                "30d": timedelta(days=30), "90d": timedelta(days=90)}
DEFAULT_CLEANUP_AGE = "1d"
CLEANUP_IDS_AUDITED = 100


def client_url(request: Request, action: str, client_id: str) -> str:
    return pages.local(request, f"/admin/clients/{action}?{urlencode({'client_id': client_id})}")


def _not_found(client_id: str) -> ErrorPage:
    return ErrorPage("Not found", "There is no such client; it may have been deleted.", status_code=404,
                     detail=f"no client {client_id!r}")


def _require(session: Session, client_id: str) -> Client:
    client = clients.get(session, client_id)
    if client is None:
        raise _not_found(client_id)
    return client


def _refused(exc: AppError) -> ErrorPage:
    return ErrorPage("Not possible", str(exc), status_code=404 if isinstance(exc, NotFound) else 400)


@dataclass
class ClientFields:
    """The create/edit form: what was typed, kept as typed so a refused form comes back intact."""

    name: str = ""
    redirect_uris: str = ""  # one per line
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])
    auth_method: str = "client_secret_basic"
    scopes: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    can_introspect: bool = False
    dpop_bound_access_tokens: bool = False
    # private_key_jwt: a JWK Set as JSON text, or its URL; the optional one algorithm.
    jwks: str = ""
    jwks_uri: str = ""
    signing_alg: str = ""
    allowed_ips: str = ""  # one CIDR block per line; empty: anywhere

    @classmethod
    def from_form(cls, form: Params, pairs: list[tuple[str, str]]) -> ClientFields:
        return cls(name=form.get("name", ""), redirect_uris=form.get("redirect_uris", ""),
                   grant_types=pages.values(pairs, "grant_type"), auth_method=form.get("auth_method", ""),
                   scopes=pages.values(pairs, "scope"), resources=pages.values(pairs, "resource"),
                   can_introspect=form.get("can_introspect") == "on", jwks=form.get("jwks", ""),
                   jwks_uri=form.get("jwks_uri", ""), signing_alg=form.get("signing_alg", ""),
                   allowed_ips=form.get("allowed_ips", ""),
                    dpop_bound_access_tokens=form.get("dpop_bound_access_tokens") == "on")

    @classmethod
    def of(cls, client: Client) -> ClientFields:
        return cls(name=client.name, redirect_uris="\n".join(client.redirect_uris),
                   grant_types=list(client.grant_types), auth_method=client.token_endpoint_auth_method,
                   scopes=list(client.scopes), resources=list(client.resources),
                   can_introspect=client.can_introspect,
                   jwks=json.dumps(client.jwks, indent=2) if client.jwks else "", jwks_uri=client.jwks_uri or "",
                   signing_alg=client.token_endpoint_auth_signing_alg or "",
                   allowed_ips="\n".join(client.allowed_ips or []),
                    dpop_bound_access_tokens=client.dpop_bound_access_tokens)

    def spec(self, *, allow_loopback_http: bool = False) -> NewClient:
        uris = [line.strip() for line in self.redirect_uris.splitlines() if line.strip()]
        jwks: dict[str, Any] | None = None
        if self.jwks.strip():
            try:
                jwks = json.loads(self.jwks)
            except ValueError:
                raise FieldError("jwks", "the JWK Set is not JSON") from None
            if not isinstance(jwks, dict):
                raise FieldError("jwks", "a JWK Set is a JSON object with a keys array")
        return NewClient(name=self.name, redirect_uris=uris, grant_types=self.grant_types,
                         auth_method=self.auth_method or None, scopes=self.scopes, resources=self.resources,
                         can_introspect=self.can_introspect, jwks=jwks, jwks_uri=self.jwks_uri.strip() or None,
                         signing_alg=self.signing_alg or None,
                         allowed_ips=[line.strip() for line in self.allowed_ips.splitlines() if line.strip()],
                         allow_loopback_http=allow_loopback_http,
                          dpop_bound_access_tokens=self.dpop_bound_access_tokens)


def _snapshot(client: Client) -> dict[str, Any]:
    return {"name": client.name, "redirect_uris": list(client.redirect_uris), "grant_types": list(client.grant_types),
            "token_endpoint_auth_method": client.token_endpoint_auth_method, "scopes": list(client.scopes),
            "resources": list(client.resources), "can_introspect": client.can_introspect,
            "jwks": client.jwks, "jwks_uri": client.jwks_uri,
            "token_endpoint_auth_signing_alg": client.token_endpoint_auth_signing_alg,
            "allowed_ips": list(client.allowed_ips or []),
             "dpop_bound_access_tokens": client.dpop_bound_access_tokens}


def _form_page(request: Request, cookies: Cookies, session: Session, who: SignedIn, fields: ClientFields, *,
               client: Client | None = None, errors: Mapping[str, str] | None = None) -> Response:
    return pages.render(request, cookies, "admin/client_form.html", {
        "section": "clients", "fields": fields, "client": client, "errors": errors or {},
        "scopes": catalog.list_scopes(session), "resources": catalog.list_resources(session),
        "grant_types": GRANT_TYPES if client is None or not client.self_registered else clients.SELF_REGISTERED_GRANTS,
        "auth_methods": FORM_AUTH_METHODS, "may_write": common.may_write(who), "kind_labels": KIND_LABELS,
        "signing_algs": ALGORITHMS,
    }, who=who, status_code=400 if errors else 200)


def _secret_page(request: Request, cookies: Cookies, who: SignedIn, client: Client, secret: str,
                 heading: str) -> Response:
    return pages.render(request, cookies, "admin/client_secret.html", {
        "section": "clients", "client": client, "secret": secret, "heading": heading,
        "detail_url": client_url(request, "detail", client.client_id)}, who=who)


MAX_PAGE = 1_000_000  # keeps OFFSET within a 64-bit integer on every backend


def _int(value: str | None, default: int) -> int:
    try:
        return min(max(int(value or default), 1), MAX_PAGE)
    except ValueError:
        return default


def _cutoff(params: Mapping[str, str], now: datetime) -> tuple[str, datetime, int]:
    """The clean-up criteria: the age chosen and the moment of the preview, so the POST decides with
    the same cutoff the operator saw (a client that ages past it meanwhile is not swept along)."""
    age = params.get("age", DEFAULT_CLEANUP_AGE)
    if age not in CLEANUP_AGES:
        age = DEFAULT_CLEANUP_AGE
    as_of = int(now.timestamp())
    given = params.get("as_of")
    # ASCII and bounded: str.isdigit() is also true for "²" and for numbers past int()'s digit limit (500s).
    if given and given.isascii() and given.isdigit() and len(given) <= 12:
        as_of = min(int(given), as_of)  # never later than now: a later cutoff would only widen the set
    return age, datetime.fromtimestamp(as_of, now.tzinfo) - CLEANUP_AGES[age], as_of


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    @api.get("/clients")
    def client_list(request: Request, services: ServicesDep) -> Response:
        params = request.query_params
        query = ClientQuery(search=printable(params.get("q", ""))[:200], kind=params.get("kind", ""),
                            state=params.get("state", ""))
        page = _int(params.get("page"), 1)
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            found, total = clients.search_clients(session, query, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
            live = grants.live_grants_by_client(session, [c.client_id for c in found], utcnow())
        typed = {"q": query.search, "kind": query.kind, "state": query.state}
        return pages.render(request, cookies, "admin/clients.html", {
            "section": "clients", "clients": found, "total": total, "live": live, "query": typed,
            "page": page, "pages": max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
            "page_link": lambda n: "?" + urlencode({**{k: v for k, v in typed.items() if v}, "page": n}),
            "kind_labels": KIND_LABELS, "state_labels": STATE_LABELS, "may_write": common.may_write(who),
        }, who=who)

    @api.get("/clients/new")
    def new_client_form(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return _form_page(request, cookies, session, who, ClientFields())

    @api.post("/clients")
    async def create_client(request: Request, services: ServicesDep) -> Response:
        form, pairs = await pages.read_form(request)
        return await run_in_threadpool(_create, request, services, form, pairs)

    def _create(request: Request, services: Services, form: Params, pairs: list[tuple[str, str]]) -> Response:
        fields = ClientFields.from_form(form, pairs)
        loopback = services.settings.cimd_allow_loopback_http
        with services.db.session() as session:
            who = common.writer(session, request, cookies, form)
            try:
                created = clients.create_client(session, fields.spec(allow_loopback_http=loopback))
            except FieldError as exc:
                # Nothing was added: validation runs before any row is written.
                return _form_page(request, cookies, session, who, fields, errors=exc.errors)
            client = created.client
            common.audit(session, who, request, "client.created", client_id=client.client_id, name=client.name,
                         kind=client.kind, public=client.is_public, redirect_uris=client.redirect_uris,
                         grant_types=client.grant_types, scopes=client.scopes, resources=client.resources)
        if created.client_secret:
            return _secret_page(request, cookies, who, client, created.client_secret, "Client created")
        response = pages.see_other(client_url(request, "detail", client.client_id))
        pages.flash(cookies, request, response, f"Client “{client.name}” created.")
        return response

    @api.get("/clients/detail")
    def client_detail(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        now = utcnow()
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            client = _require(session, client_id)
            footprint = grants.client_footprint(session, client_id, now)
            events = event_rows(session, audit_queries.page(session, AuditFilter(client_id=client_id),
                                                            limit=RECENT_EVENTS))
        return pages.render(request, cookies, "admin/client_detail.html", {
            "section": "clients", "client": client, "footprint": footprint, "events": events,
            "kind_labels": KIND_LABELS, "may_write": common.may_write(who),
            "audit_url": pages.local(request, "/admin/audit?" + urlencode({"client_id": client_id})),
        }, who=who)

    @api.get("/clients/edit")
    def edit_client_form(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            client = _require(session, client_id)
            return _form_page(request, cookies, session, who, ClientFields.of(client), client=client)

    @api.post("/clients/edit")
    async def edit_client(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        form, pairs = await pages.read_form(request)
        return await run_in_threadpool(_edit, request, services, client_id, form, pairs)

    def _edit(request: Request, services: Services, client_id: str, form: Params,
              pairs: list[tuple[str, str]]) -> Response:
        fields = ClientFields.from_form(form, pairs)
        loopback = services.settings.cimd_allow_loopback_http
        with services.db.session() as session:
            who = common.writer(session, request, cookies, form)
            client = _require(session, client_id)
            before = _snapshot(client)
            try:
                updated = clients.update_client(session, client_id, fields.spec(allow_loopback_http=loopback))
            except FieldError as exc:
                # Validation runs before the client is changed, so there is nothing to undo.
                return _form_page(request, cookies, session, who, fields, client=client, errors=exc.errors)
            except AppError as exc:
                raise _refused(exc) from None
            after = _snapshot(updated.client)
            changed = sorted(k for k in after if after[k] != before[k])
            common.audit(session, who, request, "client.updated", client_id=client_id, changed=changed,
                         **{k: after[k] for k in changed}, new_secret=updated.client_secret is not None)
        if updated.client_secret:
            return _secret_page(request, cookies, who, updated.client, updated.client_secret,
                                "Client updated: it is confidential now")
        response = pages.see_other(client_url(request, "detail", client_id))
        pages.flash(cookies, request, response, "Client updated." if changed else "Nothing changed.")
        return response

    def _confirm_page(request: Request, services: Services, client_id: str, action: str) -> Response:
        now = utcnow()
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            client = _require(session, client_id)
            footprint = grants.client_footprint(session, client_id, now)
        return pages.render(request, cookies, "admin/client_confirm.html", {
            "section": "clients", "client": client, "action": action, "footprint": footprint,
            "detail_url": client_url(request, "detail", client_id), "kind_labels": KIND_LABELS,
            "may_write": common.may_write(who)}, who=who)

    @api.get("/clients/rotate")
    def rotate_confirm(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        return _confirm_page(request, services, client_id, "rotate")

    @api.post("/clients/rotate")
    async def rotate(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        form, _ = await pages.read_form(request)

        def work() -> Response:
            with services.db.session() as session:
                who = common.writer(session, request, cookies, form)
                client = _require(session, client_id)
                try:
                    secret = clients.rotate_secret(session, client_id)
                except AppError as exc:
                    raise _refused(exc) from None
                common.audit(session, who, request, "client.secret_rotated", client_id=client_id)
            return _secret_page(request, cookies, who, client, secret, "Secret rotated")

        return await run_in_threadpool(work)

    @api.get("/clients/disable")
    def disable_confirm(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        return _confirm_page(request, services, client_id, "disable")

    def _set_disabled(request: Request, services: Services, client_id: str, form: Params,
                      disabled: bool) -> Response:
        with services.db.session() as session:
            who = common.writer(session, request, cookies, form)
            _require(session, client_id)
            client = clients.set_disabled(session, client_id, disabled)
            common.audit(session, who, request, "client.disabled" if disabled else "client.enabled",
                         client_id=client_id, name=client.name)
        response = pages.see_other(client_url(request, "detail", client_id))
        pages.flash(cookies, request, response, f"Client “{client.name}” {'disabled' if disabled else 'enabled'}.")
        return response

    @api.post("/clients/disable")
    async def disable(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        form, _ = await pages.read_form(request)
        return await run_in_threadpool(_set_disabled, request, services, client_id, form, True)

    @api.post("/clients/enable")
    async def enable(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        """Enabling takes nothing away, so it needs no confirmation page."""
        form, _ = await pages.read_form(request)
        return await run_in_threadpool(_set_disabled, request, services, client_id, form, False)

    @api.get("/clients/delete")
    def delete_confirm(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        return _confirm_page(request, services, client_id, "delete")

    @api.post("/clients/delete")
    async def delete(request: Request, services: ServicesDep, client_id: str = "") -> Response:
        form, _ = await pages.read_form(request)

        def work() -> Response:
            now = utcnow()
            with services.db.session() as session:
                who = common.writer(session, request, cookies, form)
                client = _require(session, client_id)
                name, kind = client.name, client.kind
                gone = grants.client_footprint(session, client_id, now)
                # Consents, codes, pending requests and refresh tokens go with it (ON DELETE CASCADE);
                # introspection reports its access tokens inactive once the client is gone.
                clients.delete_client(session, client_id)
                common.audit(session, who, request, "client.deleted", client_id=client_id, name=name, kind=kind,
                             consents=gone.consents, refresh_families=gone.refresh_families)
            response = pages.see_other(pages.local(request, "/admin/clients"))
            pages.flash(cookies, request, response, f"Client “{name}” deleted.")
            return response

        return await run_in_threadpool(work)

    @api.get("/clients/cleanup")
    def cleanup_preview(request: Request, services: ServicesDep) -> Response:
        now = utcnow()
        age, cutoff, as_of = _cutoff(request.query_params, now)
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            stale = clients.stale_clients(session, now, cutoff)
        return pages.render(request, cookies, "admin/clients_cleanup.html", {
            "section": "clients", "stale": stale, "age": age, "ages": list(CLEANUP_AGES), "as_of": as_of,
            "cutoff": cutoff, "kind_labels": KIND_LABELS, "may_write": common.may_write(who)}, who=who)

    @api.post("/clients/cleanup")
    async def cleanup(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)

        def work() -> Response:
            now = utcnow()
            age, cutoff, _ = _cutoff({k: form.get(k, "") for k in ("age", "as_of") if form.get(k)}, now)
            with services.db.session() as session:
                who = common.writer(session, request, cookies, form)
                deleted = clients.delete_stale_clients(session, now, cutoff)
                common.audit(session, who, request, "client.cleanup", count=len(deleted), age=age,
                             cutoff=cutoff.isoformat(), client_ids=deleted[:CLEANUP_IDS_AUDITED],
                             truncated=len(deleted) > CLEANUP_IDS_AUDITED)
            response = pages.see_other(pages.local(request, "/admin/clients"))
            pages.flash(cookies, request, response, f"Clean-up deleted {len(deleted)} client(s).")
            return response

        return await run_in_threadpool(work)

    return api
