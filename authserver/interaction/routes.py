"""The browser side: /authorize, the sign-in and consent pages, and sign-out.

Routes stay thin; the rules are in ``oauth.authorize`` (what a request may ask) and
``interaction.flow`` (where the request stands). Every POST carries a CSRF token
bound to the request and to this browser's binding cookie.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from authserver.audit.log import record
from authserver.audit.models import AuditEvent
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE, AuthorizationError, ErrorPage, InvalidRequest
from authserver.interaction import consents, flow, sessions
from authserver.interaction.cookies import Cookies
from authserver.interaction.models import AuthorizationRequest
from authserver.oauth import authorize
from authserver.oauth.params import Params, collect, read_form_items
from authserver.oauth.registry import ClientRegistry
from authserver.services import Services
from authserver.uris import is_loopback_uri
from authserver.users import repository as users

BAD_CSRF = ErrorPage("Form expired", "This form was not sent from this page, or it has expired. "
                     "Go back to the application and start again.", status_code=403, detail="CSRF check failed")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def local(request: Request, path: str) -> str:
    """A path of ours, under the issuer's path when it has one (routes are mounted there)."""
    return f"{request.app.state.services.settings.issuer_path}{path}"


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


async def authorization_params(request: Request) -> Params:
    if request.method == "POST":
        try:
            return collect(await read_form_items(request))
        except InvalidRequest:
            raise ErrorPage("Invalid request", "The request could not be read.") from None
    return collect(request.query_params.multi_items())


async def page_form(request: Request, max_fields: int = 20) -> list[tuple[str, object]]:
    """A form posted from one of our pages; one that cannot be read is answered like a forged one."""
    try:
        return await read_form_items(request, max_fields=max_fields)
    except InvalidRequest:
        raise BAD_CSRF from None


def router(cookies: Cookies, registry: ClientRegistry) -> APIRouter:
    api = APIRouter()

    @api.api_route("/authorize", methods=["GET", "POST"])
    def authorize_endpoint(request: Request, services: ServicesDep,
                           params: Annotated[Params, Depends(authorization_params)]) -> Response:
        browser_id, new_browser = cookies.browser_id(request)
        registry.prefetch(params.get("client_id"))
        with services.db.session() as session:
            validated = authorize.validate(session, services.settings, registry, params)
            signed_in = sessions.current(session, cookies.session_id(request))
            if "none" in validated.prompt:
                location = _silent(session, services, validated, signed_in, browser_id, client_ip(request))
                response = redirect(location)
            else:
                rid, row = flow.start(session, validated, browser_id, services.settings.authorization_request_ttl)
                if signed_in and "login" not in validated.prompt:
                    flow.authenticate(row, signed_in[1].id, signed_in[0].auth_time)
                response = redirect(local(request, f"/interaction/{rid}"))
        if new_browser:
            cookies.set_browser(response, browser_id)
        return response

    @api.get("/interaction/{rid}")
    def interaction(rid: str, request: Request, services: ServicesDep) -> Response:
        with services.db.session() as session:
            row = flow.load(session, rid, request.cookies.get(cookies.browser_name))
            signed_in = sessions.current(session, cookies.session_id(request))
            if row.status == flow.AUTHENTICATED and (signed_in is None or signed_in[1].id != row.user_id):
                row.status = flow.CREATED  # the person signed out (or in as someone else) meanwhile
            if row.status == flow.CREATED:
                return _login_page(request, cookies, session, rid, row)
            need = flow.consent_need(session, row)
            if need.needed:
                return _consent_page(request, services, cookies, session, rid, row, need)
            location = flow.finish_with_code(session, services.settings, row, row.scopes, client_ip(request))
        return redirect(location)

    @api.post("/interaction/{rid}/login")
    async def login(rid: str, request: Request, services: ServicesDep) -> Response:
        form = collect(await page_form(request))
        return await run_in_threadpool(_sign_in, rid, request, services, cookies, form)

    @api.post("/interaction/{rid}/consent")
    async def consent(rid: str, request: Request, services: ServicesDep) -> Response:
        items = await page_form(request, max_fields=200)
        ticked = [value for key, value in items if key == "scope" and isinstance(value, str)]
        return await run_in_threadpool(_decide, rid, request, services, cookies, collect(items), ticked)

    @api.post("/logout")
    async def logout(request: Request, services: ServicesDep) -> Response:
        form = collect(await page_form(request))
        value = cookies.session_id(request)
        if value and not cookies.csrf_ok(form.get("csrf"), "logout", value):
            raise BAD_CSRF
        if value:
            await run_in_threadpool(_sign_out, services, value, client_ip(request))
        response = services_templates(request).TemplateResponse(
            request, "message.html", {"title": "Signed out", "message": "You are signed out."}, headers=NO_STORE)
        cookies.clear_session(response)
        return response

    return api


LOGIN_FAILURE_LIMIT = 20  # per client IP in LOGIN_FAILURE_WINDOW, counted from the audit log (all nodes)
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
BAD_LOGIN = "That username and password do not match an active account."


def _sign_in(rid: str, request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    browser_id = request.cookies.get(cookies.browser_name)
    username, password, ip = form.get("username", ""), form.get("password", ""), client_ip(request)
    with services.db.session() as session:
        row = flow.load(session, rid, browser_id)
        if not cookies.csrf_ok(form.get("csrf"), "login", rid, browser_id or ""):
            raise BAD_CSRF
        error = None
        if _too_many_failures(session, ip):
            error = "Too many failed sign-ins from your network. Wait a few minutes and try again."
        elif form.malformed or not 0 < len(username) <= 150 or len(password) > 1024:
            error = BAD_LOGIN  # no argon2 work, and nothing PostgreSQL cannot store, for such input
        else:
            user = users.authenticate(session, username, password)
            if user is None:
                error = BAD_LOGIN
        if error is not None:
            # Only a real account's name is kept: what people type there is often a password.
            known = not form.malformed and len(username) <= 150 and users.get_by_username(session, username)
            record(session, "login.failed", actor=username if known else None, client_id=row.client_id, ip=ip)
        else:
            assert user is not None
            value, login_session = sessions.start(session, user, services.settings.session_ttl, ip)
            flow.authenticate(row, user.id, login_session.auth_time)
            record(session, "login.succeeded", actor=str(user.id), client_id=row.client_id, ip=ip,
                   username=user.username)
    if error is not None:
        # Committed above so the failure is audited; the page is rendered afresh.
        with services.db.read_session() as session:
            row = flow.load(session, rid, browser_id)
            shown = username if not form.malformed and len(username) <= 150 else ""
            return _login_page(request, cookies, session, rid, row, username=shown, error=error, status_code=401)
    response = redirect(local(request, f"/interaction/{rid}"))
    cookies.set_session(response, value)
    return response


def _too_many_failures(session: Any, ip: str | None) -> bool:
    if ip is None:
        return False
    failures = session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.event == "login.failed", AuditEvent.ip == ip, AuditEvent.at > utcnow() - LOGIN_FAILURE_WINDOW))
    return (failures or 0) >= LOGIN_FAILURE_LIMIT


def _sign_out(services: Services, value: str, ip: str | None) -> None:
    with services.db.session() as session:
        signed_in = sessions.current(session, value)
        sessions.end(session, value)
        if signed_in:
            record(session, "logout", actor=str(signed_in[1].id), ip=ip)


def services_templates(request: Request) -> Any:
    return request.app.state.templates


def _silent(session: Any, services: Services, validated: authorize.AuthorizationParams,
            signed_in: Any, browser_id: str, ip: str | None) -> str:
    """prompt=none: answer at once, with a code or with why a page would have been needed."""
    settings = services.settings

    def fail(error: str, description: str) -> AuthorizationError:
        return AuthorizationError(error, description, redirect_uri=validated.redirect_uri, state=validated.state,
                                  issuer=settings.issuer)

    if signed_in is None:
        raise fail("login_required", "the person is not signed in")
    _, row = flow.start(session, validated, browser_id, settings.authorization_request_ttl)
    flow.authenticate(row, signed_in[1].id, signed_in[0].auth_time)
    if flow.consent_need(session, row).needed:
        raise fail("consent_required", "the person has not allowed this yet")
    return flow.finish_with_code(session, settings, row, row.scopes, ip)


def _decide(rid: str, request: Request, services: Services, cookies: Cookies, form: Params,
            ticked: list[str]) -> Response:
    browser_id = request.cookies.get(cookies.browser_name)
    settings = services.settings
    with services.db.session() as session:
        row = flow.load(session, rid, browser_id)
        if not cookies.csrf_ok(form.get("csrf"), "consent", rid, browser_id or ""):
            raise BAD_CSRF
        signed_in = sessions.current(session, cookies.session_id(request))
        if row.status != flow.AUTHENTICATED or signed_in is None or signed_in[1].id != row.user_id:
            raise ErrorPage("Sign in again", "Your session changed. Go back to the application and start again.",
                            status_code=403, detail="consent without the signed-in user of the request")
        need = flow.consent_need(session, row)
        ip = client_ip(request)
        decision = form.get("decision")
        approved_new = [s for s in need.new if s in set(ticked)]
        if decision != "allow" or (not approved_new and need.new):
            record(session, "consent.denied", actor=str(row.user_id), client_id=row.client_id, ip=ip,
                   resource=row.resource, scopes=need.new)
            location = flow.finish_with_error(session, settings, row, "access_denied",
                                              "the person did not allow the request")
            return redirect(location)
        assert row.user_id is not None
        granted = [s for s in row.scopes if s in set(need.already) | set(approved_new)]
        record(session, "consent.granted", actor=str(row.user_id), client_id=row.client_id, ip=ip,
               resource=row.resource, scopes=granted, declined=[s for s in need.new if s not in approved_new])
        # Finish before remembering: the conditional UPDATE makes a concurrent second click wait
        # here and then get the "expired" page, instead of racing on the consents row.
        location = flow.finish_with_code(session, settings, row, granted, ip)
        consents.remember(session, row.user_id, row.client_id, row.resource, approved_new)
        _client_consented(session, row)
    return redirect(location)


def _client_consented(session: Any, row: AuthorizationRequest) -> None:
    """A dynamically registered client that got a consent is no longer a candidate for expiry."""
    client = clients.get(session, row.client_id)
    if client is not None and client.expires_at is not None:
        client.expires_at = None


def _login_page(request: Request, cookies: Cookies, session: Any, rid: str, row: AuthorizationRequest, *,
                username: str = "", error: str | None = None, status_code: int = 200) -> Response:
    browser_id = request.cookies.get(cookies.browser_name) or ""
    client = clients.get(session, row.client_id)
    return services_templates(request).TemplateResponse(request, "login.html", {
        "action": local(request, f"/interaction/{rid}/login"), "csrf": cookies.csrf_token("login", rid, browser_id),
        "client_name": client.name if client else row.client_id, "username": username, "error": error,
    }, status_code=status_code, headers=NO_STORE)


def _consent_page(request: Request, services: Services, cookies: Cookies, session: Any, rid: str,
                  row: AuthorizationRequest, need: flow.ConsentNeed) -> Response:
    client = clients.require(session, row.client_id)
    resource = catalog.require_resource(session, row.resource)
    view = flow.describe(session, client, resource, need)
    browser_id = request.cookies.get(cookies.browser_name) or ""
    signed_in = sessions.current(session, cookies.session_id(request))
    redirect_host = urlsplit(row.redirect_uri).netloc
    return services_templates(request).TemplateResponse(request, "consent.html", {
        "action": local(request, f"/interaction/{rid}/consent"), "logout_action": local(request, "/logout"),
        "csrf": cookies.csrf_token("consent", rid, browser_id),
        "view": view, "redirect_host": redirect_host, "loopback": is_loopback_uri(row.redirect_uri),
        "verified": client.verified, "published_by": urlsplit(client.client_id).netloc if client.kind == "metadata"
        else None, "username": signed_in[1].username if signed_in else "",
        "logout_csrf": cookies.csrf_token("logout", cookies.session_id(request) or ""),
    }, headers=NO_STORE)
