"""The stand-alone sign-in page (for /account and /admin) and the language switch.

Sign-in inside an authorization request stays in ``interaction``; this page is for a person
who comes to us directly. Its form's CSRF token is bound to the browser cookie (there is no
session yet), and it returns only to a local path (``safe_next``), never to another site. After a
right password, a person with two-step verification is shown the code page here instead
(``mfa.steps``); the session starts only with the code.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from authserver.audit.log import record
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE
from authserver.interaction import sessions, signin
from authserver.interaction.cookies import Cookies
from authserver.mfa import steps, totp
from authserver.oauth.params import Params
from authserver.services import Services
from authserver.web import i18n, pages

LANGUAGE_COOKIE_AGE = 365 * 86400


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    @api.get("/login")
    def login_page(request: Request, services: ServicesDep, next: str | None = None,
                   again: str | None = None) -> Response:
        target = pages.safe_next(request, next)
        with services.db.read_session() as session:
            if pages.signed_in(session, request, cookies) is not None:
                return pages.see_other(target)
            if again is None and steps.find(session, cookies.second_step_id(request),
                                            request.cookies.get(cookies.browser_name), None) is not None:
                return _second_step_page(request, cookies, target)
        response = _page(request, cookies, target)
        if again is not None:  # "Sign in with another account" on the code page
            cookies.clear_second_step(response)
        return response

    @api.post("/login")
    async def login(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request, max_fields=10)
        return await run_in_threadpool(_sign_in, request, services, cookies, form)

    @api.post("/login/second-factor")
    async def second_factor(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request, max_fields=10)
        return await run_in_threadpool(_second_step, request, services, cookies, form)

    @api.get("/language")
    def switch_language(request: Request, lang: str = "", next: str | None = None) -> Response:
        """Links on every page; only a language cookie changes, so a plain GET is harmless."""
        response = RedirectResponse(pages.safe_next(request, next), status_code=303, headers=NO_STORE)
        if lang in i18n.LANGUAGES:
            response.set_cookie(i18n.COOKIE, lang, max_age=LANGUAGE_COOKIE_AGE, path="/", secure=cookies.secure,
                                httponly=True, samesite="lax")
        return response

    return api


def _page(request: Request, cookies: Cookies, target: str, *, username: str = "", error: str | None = None,
          status_code: int = 200) -> Response:
    browser_id, new = cookies.browser_id(request)
    response: Response = request.app.state.templates.TemplateResponse(request, "login.html", {
        "action": pages.local(request, "/login"), "csrf": cookies.csrf_token("signin", browser_id),
        "client_name": None, "username": username, "error": error, "next": target,
        "switch_next": pages.sign_in_location(request, target),
    }, status_code=status_code, headers=NO_STORE)
    if new:
        cookies.set_browser(response, browser_id)
    return response


def _sign_in(request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    browser_id = request.cookies.get(cookies.browser_name)
    target = pages.safe_next(request, form.get("next"))
    if not browser_id or not cookies.csrf_ok(form.get("csrf"), "signin", browser_id):
        raise pages.BAD_CSRF
    username, password = form.get("username", ""), form.get("password", "")
    ip = request.client.host if request.client else None
    with services.db.read_session() as session:
        attempt = signin.prepare(session, services.signin_throttle, username, malformed=form.malformed, ip=ip)
    signin.verify(attempt, password)  # argon2id with no transaction open (see interaction.signin)
    step = None
    with services.db.session() as session:
        user, error = signin.conclude(session, attempt)
        if user is not None and totp.enrolled(session, user.id):
            # The password was right; no session until the code (mfa.steps), in this browser.
            step = steps.start(session, user.id, browser_id, None)
            record(session, "mfa.challenged", actor=str(user.id), ip=ip)
        elif user is not None:
            value, login = sessions.start(session, user, services.settings.session_ttl, ip)
            record(session, "login.succeeded", actor=str(user.id), ip=ip, username=user.username, amr=login.amr)
    if error is not None:
        return _page(request, cookies, target, username=signin.shown_username(username, form.malformed),
                     error=error, status_code=401)
    if step is not None:
        response = pages.see_other(pages.sign_in_location(request, target))
        cookies.set_second_step(response, step, steps.TTL)
        return response
    response = pages.see_other(target)
    cookies.set_session(response, value)
    return response


def _second_step(request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    browser_id = request.cookies.get(cookies.browser_name)
    target = pages.safe_next(request, form.get("next"))
    if not browser_id or not cookies.csrf_ok(form.get("csrf"), "second-factor", browser_id):
        raise pages.BAD_CSRF
    ip = request.client.host if request.client else None
    outcome = steps.complete(services, cookies.second_step_id(request), browser_id, None, form.get("code", ""), ip)
    if outcome.session_value is not None:
        done = pages.see_other(target)
        cookies.clear_second_step(done)
        cookies.set_session(done, outcome.session_value)
        return done
    if outcome.start_again:
        response = _page(request, cookies, target, error=outcome.error or steps.START_AGAIN, status_code=401)
        cookies.clear_second_step(response)
        return response
    return _second_step_page(request, cookies, target, error=outcome.error, status_code=401)


def _second_step_page(request: Request, cookies: Cookies, target: str, *, error: str | None = None,
                      status_code: int = 200) -> Response:
    browser_id = request.cookies.get(cookies.browser_name) or ""
    response: Response = request.app.state.templates.TemplateResponse(request, "second_step.html", {
        "action": pages.local(request, "/login/second-factor"), "csrf": cookies.csrf_token("second-factor", browser_id),
        "error": error, "next": target, "switch_next": pages.sign_in_location(request, target),
        "start_over": pages.sign_in_location(request, target) + "&again=1",
    }, status_code=status_code, headers=NO_STORE)
    return response
