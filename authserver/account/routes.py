"""The person's own account pages: connected apps (and disconnecting one), activity, password.

Every route is parse → one call into ``account.apps``, ``account.activity`` or
``account.password`` → respond. Pages read in read-only units of work; each POST checks this
login session's CSRF token before it acts and answers with a redirect and a flash message
(Post/Redirect/Get), or with the form again and its errors (400). Database work and argon2
run in the threadpool, never on the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.account import activity, dates, password, two_step
from authserver.account import apps as connected_apps
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.interaction.cookies import Cookies
from authserver.oauth.params import Params
from authserver.services import Services
from authserver.web import pages
from authserver.web.i18n import N_, gettext_for
from authserver.web.pages import SignedIn

DISCONNECTED = N_("%(app)s can no longer use %(server)s. It will have to ask you again.")
PASSWORD_CHANGED = N_("Your password was changed. Any other browser signed in to your account was signed out.")


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()
    api.include_router(two_step.router(cookies))

    @api.get("/account")
    def apps_page(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = pages.require_signed_in(session, request, cookies)
            apps = connected_apps.connected(session, who.user, utcnow())
            pause = activity.pause_before_this_sign_in(session, who.user.id)
        return _render(request, cookies, who, "account/apps.html", section="apps", apps=apps, pause=pause)

    @api.get("/account/disconnect")
    def confirm_disconnect(request: Request, services: ServicesDep, client_id: str = "",
                           resource: str = "") -> Response:
        with services.db.read_session() as session:
            who = pages.require_signed_in(session, request, cookies)
            app = connected_apps.find(session, who.user, client_id, resource, utcnow())
        return _render(request, cookies, who, "account/disconnect.html", section="apps", app=app)

    @api.post("/account/disconnect")
    async def disconnect(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request, max_fields=10)
        return await run_in_threadpool(_disconnect, request, services, cookies, form)

    @api.get("/account/activity")
    def activity_page(request: Request, services: ServicesDep) -> Response:
        before = _page_key(request.query_params.get("before"))
        with services.db.read_session() as session:
            who = pages.require_signed_in(session, request, cookies)
            shown = activity.page(session, who.user.id, before)
        return _render(request, cookies, who, "account/activity.html", section="activity", page=shown)

    @api.get("/account/password")
    def password_page(request: Request, services: ServicesDep, next: str | None = None) -> Response:
        with services.db.read_session() as session:
            who = pages.require_signed_in(session, request, cookies, one_time_password_ok=True)
        return _password_form(request, cookies, who, next_path=_next_path(request, next))

    @api.post("/account/password")
    async def change_password(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request, max_fields=10)
        return await run_in_threadpool(_change_password, request, services, cookies, form)

    return api


def _disconnect(request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    with services.db.session() as session:
        who = pages.require_signed_in(session, request, cookies)
        pages.check_csrf(cookies, who, form)
        app = connected_apps.disconnect(session, who.user, form.get("client_id", ""), form.get("resource", ""),
                                        utcnow(), ip=_ip(request))
    response = pages.see_other(pages.local(request, "/account"))
    # Filled in here because flash() takes a message id; the filled text has no catalog entry,
    # so flash's own lookup leaves it as it is.
    message = gettext_for(request, DISCONNECTED) % {"app": app.client_name, "server": app.resource_name}
    pages.flash(cookies, request, response, message)
    return response


def _change_password(request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    next_path = _next_path(request, form.get("next"))
    with services.db.read_session() as session:
        who = pages.require_signed_in(session, request, cookies, one_time_password_ok=True)
        pages.check_csrf(cookies, who, form)
        account = password.Account(who.user.id, who.user.username, who.user.password_hash, who.session_value,
                                   one_time=who.user.must_change_password)
    result = password.change(services.db, services.signin_throttle, account,
                             current=form.get("current_password", ""), new=form.get("new_password", ""),
                             confirm=form.get("confirm_password", ""), ip=_ip(request))
    if not result.done:
        return _password_form(request, cookies, who, errors=result.errors, status_code=400, next_path=next_path)
    # Back to where the one-time password interrupted (an authorization request, the console), if anywhere.
    response = pages.see_other(next_path or pages.local(request, "/account/password"))
    pages.flash(cookies, request, response, PASSWORD_CHANGED)
    return response


def _next_path(request: Request, value: str | None) -> str | None:
    """A local page to return to after the change; none (or one that could leave the site): stay."""
    if not value:
        return None
    target = pages.safe_next(request, value, default="")
    return target if target != pages.local(request, "") else None


def _password_form(request: Request, cookies: Cookies, who: SignedIn, *, errors: dict[str, str] | None = None,
                   status_code: int = 200, next_path: str | None = None) -> Response:
    return _render(request, cookies, who, "account/password.html", section="password", errors=errors or {},
                   min_length=password.MIN_LENGTH, max_length=password.MAX_LENGTH, status_code=status_code,
                   next_path=next_path, one_time=who.user.must_change_password)


def _render(request: Request, cookies: Cookies, who: SignedIn, template: str, *, section: str,
            status_code: int = 200, **context: Any) -> Response:
    return pages.render(request, cookies, template, {
        **context, "section": section, "utc": dates.utc, "iso": dates.iso,
        "may_read_console": who.user.may_read_console,
    }, who=who, status_code=status_code)


def _page_key(value: str | None) -> int | None:
    """``before`` of an activity page; anything but a plain positive number means the newest page."""
    return int(value) if value and value.isascii() and value.isdigit() and len(value) <= 18 else None


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None
