"""Two-step verification on /account/two-step: set up a TOTP authenticator, new recovery codes, turn it off.

Set-up: "Set up" stores a new secret (encrypted, unconfirmed: it does nothing yet) and the page
shows it as base32 text and as an ``otpauth://`` link (no QR image: no third-party service sees
the secret, and no QR library is a dependency); the first right code turns it on, and the ten
recovery codes are shown once, on that answer only (never stored in clear, never shown again).
This browser's session then counts as signed in with both factors (``amr``), since both were
just shown in it.

New recovery codes and turning it off need the password or a current code again: a borrowed
session alone must not be enough to take the second factor away or to read new recovery codes.
A wrong one counts against the sign-in throttle of the account (``interaction.signin.Throttle``).

Every change is audited (``mfa.enrolled``, ``mfa.recovery_codes_replaced``, ``mfa.disabled``,
``mfa.failed``), without any secret or code.

AUTHSERVER_REQUIRE_SECOND_FACTOR: these pages are the ones a person who must set one up may see
(``pages.require_signed_in(second_factor_setup=True)``); ``next`` brings them back afterwards.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.account import dates
from authserver.audit.log import FAILURE, record
from authserver.deps import ServicesDep
from authserver.interaction.cookies import Cookies
from authserver.interaction.models import LoginSession
from authserver.interaction.signin import MAX_PASSWORD, worth_a_row
from authserver.mfa import totp
from authserver.oauth.params import Params
from authserver.secrets import hash_secret
from authserver.services import Services
from authserver.users.passwords import verify_password
from authserver.web import pages
from authserver.web.i18n import N_
from authserver.web.pages import SignedIn

WRONG_CODE = N_("That code is not right. Type the code your authenticator app shows now.")
WRONG_CREDENTIAL = N_("That is not your password or a current code.")
TOO_MANY = N_("Too many wrong tries. Wait a few minutes and try again.")
TURNED_OFF = N_("Two-step verification is off.")


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    @api.get("/account/two-step")
    def page(request: Request, services: ServicesDep, next: str | None = None) -> Response:
        with services.db.read_session() as session:
            who = pages.require_signed_in(session, request, cookies, second_factor_setup=True)
            return _page(request, services, cookies, session, who, next_path=_next_path(request, next))

    @api.post("/account/two-step/begin")
    async def begin(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request, max_fields=10)
        return await run_in_threadpool(_begin, request, services, cookies, form)

    @api.post("/account/two-step/confirm")
    async def confirm(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request, max_fields=10)
        return await run_in_threadpool(_confirm, request, services, cookies, form)

    @api.post("/account/two-step/recovery-codes")
    async def recovery_codes(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request, max_fields=10)
        return await run_in_threadpool(_with_credential, request, services, cookies, form, "recovery")

    @api.post("/account/two-step/disable")
    async def disable(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request, max_fields=10)
        return await run_in_threadpool(_with_credential, request, services, cookies, form, "disable")

    return api


def _page(request: Request, services: Services, cookies: Cookies, session: Any, who: SignedIn, *,
          next_path: str | None, errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    sealer = totp.Sealer(services.secret)
    enrolled = totp.enrolled(session, who.user.id)
    secret = None if enrolled else totp.pending_secret(session, sealer, who.user.id)
    uri = totp.provisioning_uri(secret, who.user.username, services.settings.display_name) if secret else None
    return _render(request, cookies, who, "account/two_step.html", enrolled=enrolled, secret=secret, uri=uri,
                   codes_left=totp.recovery_codes_left(session, who.user.id) if enrolled else 0,
                   required=totp.required(services.settings, who.user), next_path=next_path, errors=errors or {},
                   status_code=status_code)


def _begin(request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    next_path = _next_path(request, form.get("next"))
    with services.db.session() as session:
        who = pages.require_signed_in(session, request, cookies, second_factor_setup=True)
        pages.check_csrf(cookies, who, form)
        if not totp.enrolled(session, who.user.id):
            totp.begin(session, totp.Sealer(services.secret), who.user.id)
    return pages.see_other(_here(request, next_path))


def _confirm(request: Request, services: Services, cookies: Cookies, form: Params) -> Response:
    next_path = _next_path(request, form.get("next"))
    with services.db.session() as session:
        who = pages.require_signed_in(session, request, cookies, second_factor_setup=True)
        pages.check_csrf(cookies, who, form)
        if not totp.confirm(session, totp.Sealer(services.secret), who.user.id, form.get("code", "")):
            if totp.enrolled(session, who.user.id):
                return pages.see_other(_here(request, next_path))  # a second click: already on
            return _page(request, services, cookies, session, who, next_path=next_path,
                         errors={"code": WRONG_CODE}, status_code=400)
        codes = totp.new_recovery_codes(session, who.user.id)
        # Both factors were just shown in this browser's session.
        login = session.get(LoginSession, hash_secret(who.session_value))
        if login is not None:
            login.amr = totp.AMR_TOTP
        record(session, "mfa.enrolled", actor=str(who.user.id), ip=_ip(request), method="totp",
               recovery_codes=len(codes))
    return _render(request, cookies, who, "account/recovery_codes.html", codes=codes, enrolled_now=True,
                   next_path=next_path)


def _with_credential(request: Request, services: Services, cookies: Cookies, form: Params, action: str) -> Response:
    """New recovery codes (``recovery``) or turning it off (``disable``), after the password or a code."""
    ip = _ip(request)
    with services.db.read_session() as session:
        who = pages.require_signed_in(session, request, cookies, second_factor_setup=True)
        pages.check_csrf(cookies, who, form)
        user_id, username, password_hash = who.user.id, who.user.username, who.user.password_hash
        if not totp.enrolled(session, user_id):
            return pages.see_other(_here(request, None))
    credential = form.get("credential", "")
    throttle = services.signin_throttle
    gate = throttle.admit(username, ip)
    error = None
    if gate.refused is not None:
        error = TOO_MANY
        if worth_a_row(gate.throttled_count):
            with services.db.session() as session:
                record(session, "mfa.throttled", actor=str(user_id), ip=ip, rule=gate.refused,
                       throttled_attempts=gate.throttled_count, action=action)
    else:
        is_code = totp.normalise_totp(credential) is not None
        # argon2 with no transaction open; a code is checked (and its step used) in the write below.
        right = not is_code and len(credential) <= MAX_PASSWORD and verify_password(password_hash, credential)
        with services.db.session() as session:
            if is_code:
                right = totp.verify(session, totp.Sealer(services.secret), user_id, credential)
            if not right:
                error = WRONG_CREDENTIAL
                record(session, "mfa.failed", actor=str(user_id), ip=ip, outcome=FAILURE, action=action)
            elif action == "disable":
                totp.disable(session, user_id)
                record(session, "mfa.disabled", actor=str(user_id), ip=ip, confirmed_with="code" if is_code
                       else "password")
            else:
                codes = totp.new_recovery_codes(session, user_id)
                record(session, "mfa.recovery_codes_replaced", actor=str(user_id), ip=ip, recovery_codes=len(codes))
        if right:
            throttle.succeeded(username, ip, gate)
        else:
            throttle.failed(username, ip)
    if error is not None:
        with services.db.read_session() as session:
            who = pages.require_signed_in(session, request, cookies, second_factor_setup=True)
            return _page(request, services, cookies, session, who, next_path=None, errors={action: error},
                         status_code=400)
    if action == "disable":
        response = pages.see_other(_here(request, None))
        pages.flash(cookies, request, response, TURNED_OFF)
        return response
    return _render(request, cookies, who, "account/recovery_codes.html", codes=codes, enrolled_now=False,
                   next_path=None)


def _here(request: Request, next_path: str | None) -> str:
    path = pages.local(request, "/account/two-step")
    return pages.second_factor_setup_location(request, next_path) if next_path else path


def _next_path(request: Request, value: str | None) -> str | None:
    if not value:
        return None
    target = pages.safe_next(request, value, default="")
    return target if target != pages.local(request, "") else None


def _render(request: Request, cookies: Cookies, who: SignedIn, template: str, *, status_code: int = 200,
            **context: Any) -> Response:
    return pages.render(request, cookies, template, {
        **context, "section": "two-step", "utc": dates.utc, "iso": dates.iso,
        "may_read_console": who.user.may_read_console,
    }, who=who, status_code=status_code)


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None
