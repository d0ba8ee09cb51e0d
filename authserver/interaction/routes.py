"""The browser side: /authorize, the sign-in and consent pages, and sign-out.

Routes stay thin; the rules are in ``oauth.authorize`` (what a request may ask) and
``interaction.flow`` (where the request stands). Every POST carries a CSRF token
bound to the request and to this browser's binding cookie.

A person with two-step verification gets no session from the password alone: the request stays
``created`` and its page asks for the code (``mfa.steps``, bound to this browser and this request)
until one is accepted. ``prompt=login`` and ``max_age`` (``AuthorizationParams.needs_fresh_sign_in``)
ignore an existing session; AUTHSERVER_REQUIRE_SECOND_FACTOR holds the request, like a one-time
password does, until the person has set one up.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients import repository as clients
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE, AuthorizationError, ErrorPage, InvalidRequest
from authserver.interaction import consents, flow, sessions, signin
from authserver.interaction.cookies import Cookies
from authserver.interaction.models import AuthorizationRequest, LoginSession
from authserver.mfa import steps, totp
from authserver.oauth import authorize
from authserver.oauth.params import Params, collect, read_form_items
from authserver.oauth.registry import ClientRegistry
from authserver.services import Services
from authserver.uris import is_loopback_uri, redirect_host
from authserver.users.models import User
from authserver.web import pages
from authserver.web.i18n import N_, gettext_for

BAD_CSRF = ErrorPage(N_("Form expired"), N_("This form was not sent from this page, or it has expired. "
                                             "Go back to the application and start again."),
                     status_code=403, detail="CSRF check failed")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def local(request: Request, path: str) -> str:
    """A path of ours, under the issuer's path when it has one (routes are mounted there)."""
    return f"{request.app.state.services.settings.issuer_path}{path}"


def pending_limits(services: Services) -> flow.PendingLimits:
    settings = services.settings
    return flow.PendingLimits(settings.pending_requests_per_browser, settings.pending_requests_per_ip)


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


TOO_LARGE = ErrorPage(N_("Invalid request"), N_("The request is too large."), status_code=414,
                      detail="authorization request over authorize.MAX_UNPARSED_BYTES")


async def authorization_params(request: Request) -> Params:
    """The request's parameters and its size; one far too large to parse is an error page at once
    (the size limits themselves are checked in ``authorize.validate``, which may redirect)."""
    if request.method == "POST":
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > authorize.MAX_UNPARSED_BYTES:
            raise TOO_LARGE
        size = len(await request.body())  # cached: the form parser reads it again
        if size > authorize.MAX_UNPARSED_BYTES:
            raise TOO_LARGE
        try:
            params = collect(await read_form_items(request))
        except InvalidRequest:
            raise ErrorPage(N_("Invalid request"), N_("The request could not be read.")) from None
    else:
        size = len(request.scope.get("query_string", b""))
        if size > authorize.MAX_UNPARSED_BYTES:
            raise TOO_LARGE
        params = collect(request.query_params.multi_items())
    params.size = size
    return params


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
        registry.prefetch(params.get("client_id"), client_ip(request))
        with services.db.session() as session:
            validated = authorize.validate(session, services.settings, registry, params)
            signed_in = sessions.current(session, cookies.session_id(request))
            if "none" in validated.prompt:
                location = _silent(session, services, validated, signed_in, browser_id, client_ip(request))
                response = redirect(location)
            else:
                rid, row = flow.start(session, validated, browser_id, services.settings.authorization_request_ttl,
                                      ip=client_ip(request), limits=pending_limits(services))
                if signed_in and not validated.needs_fresh_sign_in(signed_in[0].auth_time, utcnow()):
                    flow.authenticate(row, signed_in[1].id, signed_in[0].auth_time, signed_in[0].amr)
                response = redirect(local(request, f"/interaction/{rid}"))
        if new_browser:
            cookies.set_browser(response, browser_id)
        return response

    @api.get("/interaction/{rid}")
    def interaction(rid: str, request: Request, services: ServicesDep, again: str | None = None) -> Response:
        with services.db.session() as session:
            row = flow.load(session, rid, request.cookies.get(cookies.browser_name))
            signed_in = sessions.current(session, cookies.session_id(request))
            if row.status == flow.AUTHENTICATED and (signed_in is None or signed_in[1].id != row.user_id):
                row.status = flow.CREATED  # the person signed out (or in as someone else) meanwhile
            if row.status == flow.CREATED:
                if again is None and steps.find(session, cookies.second_step_id(request),
                                                request.cookies.get(cookies.browser_name), row.id_hash) is not None:
                    return _second_step_page(request, cookies, rid)
                response = _login_page(request, cookies, session, rid, row)
                if again is not None:  # "Sign in with another account" on the code page
                    cookies.clear_second_step(response)
                return response
            if signed_in is not None and signed_in[1].must_change_password:
                return _choose_a_password_first(request, rid)
            if signed_in is not None and totp.must_enrol(session, services.settings, signed_in[1]):
                return _set_up_a_second_factor_first(request, rid)
            if signed_in is not None:
                row.amr = signed_in[0].amr  # a second factor set up since (see account.two_step)
            need = flow.consent_need(session, row)
            if need.confirm_only:
                return _confirm_page(request, services, cookies, session, rid, row, need)
            if need.needed:
                return _consent_page(request, services, cookies, session, rid, row, need)
            location = flow.finish_with_code(session, services.settings, row, _silent_scopes(row, need),
                                             client_ip(request), stay_connected=need.stay_connected)
        return redirect(location)

    @api.post("/interaction/{rid}/login")
    async def login(rid: str, request: Request, services: ServicesDep) -> Response:
        form = collect(await page_form(request))
        return await run_in_threadpool(_sign_in, rid, request, services, cookies, form)

    @api.post("/interaction/{rid}/second-factor")
    async def second_factor(rid: str, request: Request, services: ServicesDep) -> Response:
        form = collect(await page_form(request))
        return await run_in_threadpool(_second_step, rid, request, services, cookies, form)

    @api.post("/interaction/{rid}/consent")
    async def consent(rid: str, request: Request, services: ServicesDep) -> Response:
        items = await page_form(request, max_fields=200)
        ticked = [value for key, value in items if key == "scope" and isinstance(value, str)]
        return await run_in_threadpool(_decide, rid, request, services, cookies, collect(items), ticked)

    @api.get("/logout")
    def logout_page(request: Request, services: ServicesDep) -> Response:
        """The sign-out page: a button, never a sign-out by GET (any site could link a visitor
        here); its form posts this session's logout CSRF token. Signed out already: a way back in."""
        with services.db.read_session() as session:
            who = pages.signed_in(session, request, cookies)
        return pages.render(request, cookies, "logout.html", {}, who=who)

    @api.post("/logout")
    async def logout(request: Request, services: ServicesDep) -> Response:
        form = collect(await page_form(request))
        value = cookies.session_id(request)
        if value and not cookies.csrf_ok(form.get("csrf"), "logout", value):
            raise BAD_CSRF
        if value:
            await run_in_threadpool(_sign_out, services, value, client_ip(request))
        response = services_templates(request).TemplateResponse(
            request, "message.html", {"title": gettext_for(request, N_("Signed out")),
                                      "message": gettext_for(request, N_("You are signed out.")),
                                      "link": (local(request, "/login"), gettext_for(request, N_("Sign in again")))},
            headers=NO_STORE)
        cookies.clear_session(response)
        return response

    return api


def _sign_in(rid: str, request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    browser_id = request.cookies.get(cookies.browser_name)
    username, password, ip = form.get("username", ""), form.get("password", ""), client_ip(request)
    with services.db.read_session() as session:
        flow.load(session, rid, browser_id)
        if not cookies.csrf_ok(form.get("csrf"), "login", rid, browser_id or ""):
            raise BAD_CSRF
        attempt = signin.prepare(session, services.signin_throttle, username, malformed=form.malformed, ip=ip)
    signin.verify(attempt, password)  # argon2id with no transaction open (see interaction.signin)
    with services.db.session() as session:
        row = flow.load(session, rid, browser_id)
        user, error = signin.conclude(session, attempt, client_id=row.client_id)
        step = None
        if user is not None and totp.enrolled(session, user.id):
            # The password was right; no session until the code (mfa.steps), in this browser, for this request.
            step = steps.start(session, user.id, browser_id or "", row.id_hash)
            record(session, "mfa.challenged", actor=str(user.id), client_id=row.client_id, ip=ip)
        elif user is not None:
            value, login_session = sessions.start(session, user, services.settings.session_ttl, ip)
            flow.authenticate(row, user.id, login_session.auth_time, login_session.amr)
            record(session, "login.succeeded", actor=str(user.id), client_id=row.client_id, ip=ip,
                   username=user.username, amr=login_session.amr)
    if error is not None:
        # Committed above so the failure is audited; the page is rendered afresh.
        with services.db.read_session() as session:
            row = flow.load(session, rid, browser_id)
            return _login_page(request, cookies, session, rid, row, username=signin.shown_username(
                username, form.malformed), error=error, status_code=401)
    response = redirect(local(request, f"/interaction/{rid}"))
    if step is not None:
        cookies.set_second_step(response, step, steps.TTL)
        return response
    cookies.set_session(response, value)
    return response


def _second_step(rid: str, request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    """The code after the password (``mfa.steps``): the session starts, and the request is
    authenticated, only when it is right."""
    browser_id = request.cookies.get(cookies.browser_name)
    with services.db.read_session() as session:
        row = flow.load(session, rid, browser_id)
        if not cookies.csrf_ok(form.get("csrf"), "second-factor", rid, browser_id or ""):
            raise BAD_CSRF
        request_hash, client_id = row.id_hash, row.client_id

    def authenticated(session: Any, user: User, login: LoginSession) -> None:
        flow.authenticate(flow.load(session, rid, browser_id), user.id, login.auth_time, login.amr)

    outcome = steps.complete(services, cookies.second_step_id(request), browser_id, request_hash,
                             form.get("code", ""), client_ip(request), client_id=client_id, signed_in=authenticated)
    if outcome.session_value is not None:
        done = redirect(local(request, f"/interaction/{rid}"))
        cookies.clear_second_step(done)
        cookies.set_session(done, outcome.session_value)
        return done
    if outcome.start_again:
        with services.db.read_session() as session:
            row = flow.load(session, rid, browser_id)
            response = _login_page(request, cookies, session, rid, row, error=outcome.error or steps.START_AGAIN,
                                   status_code=401)
        cookies.clear_second_step(response)
        return response
    return _second_step_page(request, cookies, rid, error=outcome.error, status_code=401)


def _second_step_page(request: Request, cookies: Cookies, rid: str, *, error: str | None = None,
                      status_code: int = 200) -> Response:
    browser_id = request.cookies.get(cookies.browser_name) or ""
    return services_templates(request).TemplateResponse(request, "second_step.html", {
        "action": local(request, f"/interaction/{rid}/second-factor"),
        "csrf": cookies.csrf_token("second-factor", rid, browser_id), "error": error, "next": None,
        "switch_next": local(request, f"/interaction/{rid}"),
        "start_over": local(request, f"/interaction/{rid}?again=1"),
    }, status_code=status_code, headers=NO_STORE)


def _set_up_a_second_factor_first(request: Request, rid: str) -> Response:
    """AUTHSERVER_REQUIRE_SECOND_FACTOR and none set up: no consent, and so no code, until one is;
    the set-up page then comes back to this request."""
    return redirect(pages.second_factor_setup_location(request, local(request, f"/interaction/{rid}")))


def _choose_a_password_first(request: Request, rid: str) -> Response:
    """Signed in with a one-time password (``User.must_change_password``): no consent, and so no
    code, until the person has chosen their own password; the password page then comes back to
    this request, which goes on where it stood (it stays valid for its usual lifetime)."""
    return redirect(pages.password_change_location(request, local(request, f"/interaction/{rid}")))


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
    if validated.needs_fresh_sign_in(signed_in[0].auth_time, utcnow()):
        raise fail("login_required", "the sign-in is older than max_age")
    if signed_in[1].must_change_password:
        # OIDC Core §3.1.2.6: a page is needed (the password change) before anything is answered.
        raise fail("interaction_required", "the person must replace a one-time password first")
    if totp.must_enrol(session, settings, signed_in[1]):
        raise fail("interaction_required", "the person must set up a second factor first")
    # No pending limit: a prompt=none request is finished, or rolled back, in this transaction.
    _, row = flow.start(session, validated, browser_id, settings.authorization_request_ttl, ip=ip)
    flow.authenticate(row, signed_in[1].id, signed_in[0].auth_time, signed_in[0].amr)
    need = flow.consent_need(session, row)
    if need.confirm_only:
        # OIDC Core §3.1.2.6: consent_required (not interaction_required): what is missing is the
        # person's consent to this very client instance, which only the confirmation page can give.
        raise fail("consent_required", "this app cannot be identified (loopback redirect, RFC 8252 §8.6); "
                   "the person must confirm it without prompt=none")
    if need.needed:
        raise fail("consent_required", "the person has not allowed this yet")
    return flow.finish_with_code(session, settings, row, _silent_scopes(row, need), ip,
                                 stay_connected=need.stay_connected)


def _silent_scopes(row: AuthorizationRequest, need: flow.ConsentNeed) -> list[str]:
    """What a request answered without a page gets: its scopes, ``offline_access`` only when the
    person's remembered choice is to stay connected."""
    return [s for s in row.scopes if s != OFFLINE_ACCESS or need.stay_connected]


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
            raise ErrorPage(N_("Sign in again"),
                            N_("Your session changed. Go back to the application and start again."),
                            status_code=403, detail="consent without the signed-in user of the request")
        if signed_in[1].must_change_password:
            return _choose_a_password_first(request, rid)
        if totp.must_enrol(session, settings, signed_in[1]):
            return _set_up_a_second_factor_first(request, rid)
        need = flow.consent_need(session, row)
        ip = client_ip(request)
        decision = form.get("decision")
        approved_new = [s for s in need.new if s in set(ticked)]
        client = clients.require(session, row.client_id)
        # "Stay connected" is the offline_access checkbox, offered to every client that may refresh;
        # the confirmation page has none and keeps the remembered choice.
        stay = "refresh_token" in client.grant_types and (
            need.stay_connected if need.confirm_only else OFFLINE_ACCESS in ticked)
        if decision != "allow" or (not approved_new and need.new):
            record(session, "consent.denied", actor=str(row.user_id), client_id=row.client_id, ip=ip,
                   resource=row.resource, scopes=need.new)
            location = flow.finish_with_error(session, settings, row, "access_denied",
                                              "the person did not allow the request")
            return redirect(location)
        assert row.user_id is not None
        allowed = set(need.already) | set(approved_new) | ({OFFLINE_ACCESS} if stay else set())
        granted = [s for s in row.scopes if s in allowed]
        record(session, "consent.granted", actor=str(row.user_id), client_id=row.client_id, ip=ip,
               resource=row.resource, scopes=granted, declined=[s for s in need.new if s not in approved_new],
               stay_connected=stay, confirmed=need.confirm_only)
        # Finish before remembering: the conditional UPDATE makes a concurrent second click wait
        # here and then get the "expired" page, instead of racing on the consents row.
        location = flow.finish_with_code(session, settings, row, granted, ip, stay_connected=stay)
        consents.remember(session, row.user_id, row.client_id, row.resource, approved_new, stay_connected=stay)
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
        "switch_next": local(request, f"/interaction/{rid}"),
    }, status_code=status_code, headers=NO_STORE)


def _confirm_page(request: Request, services: Services, cookies: Cookies, session: Any, rid: str,
                  row: AuthorizationRequest, need: flow.ConsentNeed) -> Response:
    """RFC 8252 §8.6: a client we cannot identify, fully covered by remembered consent, still needs
    one click. The page names the app and where the code goes (host and port of this request), and
    posts to the consent endpoint like the consent page (same CSRF token, ``decision``)."""
    client = clients.require(session, row.client_id)
    resource = catalog.require_resource(session, row.resource)
    view = flow.describe(session, client, resource, need)
    browser_id = request.cookies.get(cookies.browser_name) or ""
    signed_in = sessions.current(session, cookies.session_id(request))
    return services_templates(request).TemplateResponse(request, "confirm.html", {
        "action": local(request, f"/interaction/{rid}/consent"), "logout_action": local(request, "/logout"),
        "csrf": cookies.csrf_token("consent", rid, browser_id), "view": view,
        "redirect_host": redirect_host(row.redirect_uri), "username": signed_in[1].username if signed_in else "",
        "logout_csrf": cookies.csrf_token("logout", cookies.session_id(request) or ""),
    }, headers=NO_STORE)


def _consent_page(request: Request, services: Services, cookies: Cookies, session: Any, rid: str,
                  row: AuthorizationRequest, need: flow.ConsentNeed) -> Response:
    client = clients.require(session, row.client_id)
    resource = catalog.require_resource(session, row.resource)
    view = flow.describe(session, client, resource, need)
    browser_id = request.cookies.get(cookies.browser_name) or ""
    signed_in = sessions.current(session, cookies.session_id(request))
    # Host and port only: userinfo, path and query are the client's to choose and could mislead.
    host = redirect_host(row.redirect_uri)
    return services_templates(request).TemplateResponse(request, "consent.html", {
        "action": local(request, f"/interaction/{rid}/consent"), "logout_action": local(request, "/logout"),
        "csrf": cookies.csrf_token("consent", rid, browser_id),
        "view": view, "redirect_host": host, "loopback": is_loopback_uri(row.redirect_uri),
        "verified": client.verified, "published_by": urlsplit(client.client_id).netloc if client.kind == "metadata"
        else None, "username": signed_in[1].username if signed_in else "",
        "logout_csrf": cookies.csrf_token("logout", cookies.session_id(request) or ""),
    }, headers=NO_STORE)
