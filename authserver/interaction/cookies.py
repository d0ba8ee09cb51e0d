"""Browser cookies: the login session and the browser binding, plus CSRF tokens.

Both cookies are ``HttpOnly`` and ``SameSite=Lax`` (sent on the top-level GET that a
client's redirect causes, never on a cross-site POST); on an https issuer they are
``Secure`` and carry the ``__Host-`` prefix, which pins them to this host and path /.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from authserver.keys.crypto import derive_key
from authserver.secrets import new_secret
from authserver.settings import Settings


class Cookies:
    def __init__(self, settings: Settings, secret: str) -> None:
        prefix = "__Host-" if settings.is_https else ""
        self.session_name = f"{prefix}authserver_session"
        self.browser_name = f"{prefix}authserver_browser"
        self.second_step_name = f"{prefix}authserver_second_step"
        self.secure = settings.is_https
        self.session_ttl = settings.session_ttl
        self._csrf_key = derive_key(secret, "csrf")

    def session_id(self, request: Request) -> str | None:
        return request.cookies.get(self.session_name) or None

    def set_session(self, response: Response, value: str) -> None:
        response.set_cookie(self.session_name, value, max_age=self.session_ttl, path="/", secure=self.secure,
                            httponly=True, samesite="lax")

    def clear_session(self, response: Response) -> None:
        response.delete_cookie(self.session_name, path="/", secure=self.secure, httponly=True, samesite="lax")

    def browser_id(self, request: Request) -> tuple[str, bool]:
        """The browser's binding id, and whether it is new (and must be set)."""
        value = request.cookies.get(self.browser_name)
        if value and 20 <= len(value) <= 100:
            return value, False
        return new_secret(32), True

    def set_browser(self, response: Response, value: str) -> None:
        response.set_cookie(self.browser_name, value, path="/", secure=self.secure, httponly=True, samesite="lax")

    def second_step_id(self, request: Request) -> str | None:
        """The pending second sign-in step (``mfa.steps``): the password was right, a code is due."""
        return request.cookies.get(self.second_step_name) or None

    def set_second_step(self, response: Response, value: str, max_age: int) -> None:
        response.set_cookie(self.second_step_name, value, max_age=max_age, path="/", secure=self.secure,
                            httponly=True, samesite="lax")

    def clear_second_step(self, response: Response) -> None:
        response.delete_cookie(self.second_step_name, path="/", secure=self.secure, httponly=True, samesite="lax")

    def csrf_token(self, purpose: str, *bound_to: str) -> str:
        message = "\x00".join((purpose, *bound_to)).encode()
        digest = hmac.new(self._csrf_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def csrf_ok(self, token: str | None, purpose: str, *bound_to: str) -> bool:
        # Bytes: compare_digest refuses non-ASCII str, and a form value can be anything.
        expected = self.csrf_token(purpose, *bound_to).encode()
        return bool(token) and hmac.compare_digest((token or "").encode("utf-8", "replace"), expected)
