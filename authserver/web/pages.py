"""Signed-in pages: who is signed in, role checks, CSRF on every form, flash messages, rendering.

Account and admin routes are parse → one domain call → respond, like every route; what
they share lives here. A form is accepted only with a CSRF token bound to this login
session (an HMAC under the server secret, so nothing is stored); a visitor who is not
signed in is sent to the sign-in page and back; a role is checked on the server for
every route, never only by hiding a link.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authserver.errors import NO_STORE, ErrorPage, InvalidRequest
from authserver.interaction import sessions
from authserver.interaction.cookies import Cookies
from authserver.interaction.models import LoginSession
from authserver.mfa import totp
from authserver.oauth.params import Params, collect, read_form_items
from authserver.users.models import User
from authserver.web.i18n import N_, gettext_for

FLASH_COOKIE = "authserver_flash"
MAX_FLASH_BYTES = 2048

BAD_CSRF = ErrorPage(N_("Form expired"), N_("This form was not sent from this page, or it has expired. "
                                             "Go back, reload the page and try again."),
                     status_code=403, detail="CSRF check failed")
FORBIDDEN = ErrorPage(N_("Not allowed"), N_("Your account does not have access to this page."),
                      status_code=403, detail="role check failed")


class SignInRequired(Exception):
    """Rendered by ``errors.py`` as a redirect to the sign-in page, which comes back to ``next``."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PasswordChangeRequired(Exception):
    """The person signed in with a one-time password (``User.must_change_password``): rendered by
    ``errors.py`` as a redirect to /account/password, which comes back to ``next`` once changed."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class SecondFactorRequired(Exception):
    """AUTHSERVER_REQUIRE_SECOND_FACTOR applies to the person and they have none: rendered by
    ``errors.py`` as a redirect to the set-up page, which comes back to ``next`` once done."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class SignedIn:
    login: LoginSession
    user: User
    session_value: str  # the cookie value: CSRF tokens are bound to it

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.user.roles)


def issuer_path(request: Request) -> str:
    return str(request.app.state.services.settings.issuer_path)


def local(request: Request, path: str) -> str:
    """A path of ours, under the issuer's path when it has one (routes are mounted there)."""
    return f"{issuer_path(request)}{path}"


def safe_next(request: Request, value: str | None, default: str = "/account") -> str:
    """A local path to return to; anything that could leave this site becomes ``default``."""
    prefix = issuer_path(request)
    if (value and value.startswith(prefix + "/") and not value.startswith("//") and "\\" not in value
            and not any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value) and len(value) <= 1024):
        return value
    return f"{prefix}{default}"


def signed_in(session: Session, request: Request, cookies: Cookies) -> SignedIn | None:
    value = cookies.session_id(request)
    found = sessions.current(session, value)
    if found is None or value is None:
        return None
    return SignedIn(found[0], found[1], value)


def require_signed_in(session: Session, request: Request, cookies: Cookies, *roles: str,
                      one_time_password_ok: bool = False, second_factor_setup: bool = False) -> SignedIn:
    """The signed-in person, holding one of ``roles`` when any are named; else sign-in or 403.

    Someone signed in with a one-time password gets no page but the password page
    (``one_time_password_ok``) until they have chosen their own."""
    who = signed_in(session, request, cookies)
    if who is None:
        raise SignInRequired(_return_path(request))
    if who.user.must_change_password and not one_time_password_ok:
        raise PasswordChangeRequired(_return_path(request))
    if (not second_factor_setup and not who.user.must_change_password
            and totp.must_enrol(session, request.app.state.services.settings, who.user)):
        raise SecondFactorRequired(_return_path(request))
    if roles and not who.roles & set(roles):
        raise FORBIDDEN
    return who


def _return_path(request: Request) -> str:
    """Where to come back to after signing in or changing the password: this page (a POST's
    form cannot be replayed, so after one: the account page)."""
    if request.method != "GET":
        return local(request, "/account")
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def csrf_token(cookies: Cookies, who: SignedIn) -> str:
    return cookies.csrf_token("page", who.session_value)


def check_csrf(cookies: Cookies, who: SignedIn, form: Params) -> None:
    if form.repeated and "csrf" in form.repeated:
        raise BAD_CSRF
    if not cookies.csrf_ok(form.get("csrf"), "page", who.session_value):
        raise BAD_CSRF


async def read_form(request: Request, max_fields: int = 200) -> tuple[Params, list[tuple[str, str]]]:
    """A form posted from one of our pages: single values, and every (name, value) for multi-selects.

    One that cannot be read is answered like a forged one.
    """
    try:
        items = await read_form_items(request, max_fields=max_fields)
    except InvalidRequest:
        raise BAD_CSRF from None
    pairs = [(k, v) for k, v in items if isinstance(v, str)]
    return collect(pairs), pairs


def values(pairs: Iterable[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in pairs if k == name and v != ""]


# --- Flash messages: one signed cookie, read (and cleared) by the next page rendered. ---

def flash(cookies: Cookies, request: Request, response: Response, message: str, kind: str = "success") -> None:
    """Show ``message`` (a message id, translated here) on the next page."""
    text = gettext_for(request, message)
    payload = base64.urlsafe_b64encode(json.dumps([kind, text]).encode()).decode()
    value = f"{payload}.{cookies.csrf_token('flash', payload)}"
    if len(value) <= MAX_FLASH_BYTES:
        response.set_cookie(FLASH_COOKIE, value, path="/", secure=cookies.secure, httponly=True, samesite="lax")


def _read_flash(cookies: Cookies, request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or "." not in raw or len(raw) > MAX_FLASH_BYTES:
        return None
    payload, _, mac = raw.rpartition(".")
    if not cookies.csrf_ok(mac, "flash", payload):
        return None
    try:
        kind, text = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, TypeError):
        return None
    return (str(kind), str(text)) if kind in ("success", "error", "warning") else None


def render(request: Request, cookies: Cookies, template: str, context: dict[str, Any], *,
           who: SignedIn | None = None, status_code: int = 200) -> Response:
    """A page: the template with the signed-in person, their CSRF token and any flash message."""
    shown = _read_flash(cookies, request)
    full = {"who": who, "flash": shown, "prefix": issuer_path(request), **context}
    if who is not None:
        full.setdefault("csrf", csrf_token(cookies, who))
        full["logout_csrf"] = cookies.csrf_token("logout", who.session_value)
    response: Response = request.app.state.templates.TemplateResponse(
        request, template, full, status_code=status_code, headers=NO_STORE)
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/", secure=cookies.secure, httponly=True, samesite="lax")
    return response


def see_other(location: str) -> RedirectResponse:
    """After a successful POST: back to a page (Post/Redirect/Get)."""
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


def sign_in_location(request: Request, next_path: str) -> str:
    return local(request, f"/login?next={quote(next_path, safe='/')}")


def password_change_location(request: Request, next_path: str) -> str:
    return local(request, f"/account/password?next={quote(next_path, safe='/')}")


def second_factor_setup_location(request: Request, next_path: str) -> str:
    return local(request, f"/account/two-step?next={quote(next_path, safe='/')}")
