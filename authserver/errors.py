"""Errors, and the one place where OAuth errors become responses.

Protocol code raises; only the handlers registered by ``install_error_handlers``
render. Each error has a public ``description`` (sent to the client) and a private
``detail`` (logged only). A logged path is redacted like the access log's (no interaction id).
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, RedirectResponse, Response

from authserver.logconfig import redact_target

log = logging.getLogger("authserver.errors")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class AppError(ValueError):
    """A domain rule was broken (duplicate username, bad redirect URI…); the message is public."""


class NotFound(AppError):
    pass


class OAuthError(Exception):
    """RFC 6749 §5.2 error for JSON endpoints (token, revoke, introspect, register)."""

    error = "invalid_request"
    status_code = 400

    def __init__(self, description: str | None = None, *, detail: str | None = None,
                 error: str | None = None, status_code: int | None = None,
                 headers: dict[str, str] | None = None, audit: dict[str, Any] | None = None) -> None:
        """``audit``: an audit event (``event`` and its fields) that ``oauth_error`` records when the
        error is answered, in the audit buffer, since the failed request's transaction rolls back."""
        super().__init__(description or self.error)
        if error:
            self.error = error
        if status_code:
            self.status_code = status_code
        self.description = description
        self.detail = detail
        self.headers = headers or {}
        self.audit = audit

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: 401 with a Basic challenge when the client tried Basic auth."""

    error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """RFC 8707 §2."""

    error = "invalid_target"


class InvalidClientMetadata(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_client_metadata"


class InvalidRedirectUriMetadata(OAuthError):
    error = "invalid_redirect_uri"


class InvalidToken(OAuthError):
    error = "invalid_token"
    status_code = 401


class InvalidDPoPProof(OAuthError):
    """RFC 9449 §5: the DPoP proof of a token request is invalid (400)."""

    error = "invalid_dpop_proof"


class UseDPoPNonce(OAuthError):
    """RFC 9449 §8: the proof lacks the server's current nonce; ``DPoP-Nonce`` carries a fresh one."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, *, nonce: str) -> None:
        super().__init__(description, headers={"DPoP-Nonce": nonce})


class RateLimited(OAuthError):
    """An abuse limit was reached (``authserver.limits``): 429 with ``Retry-After`` (RFC 6585 §4).

    OAuth defines no rate-limit error for JSON endpoints, so the body uses the closest registered
    code, ``temporarily_unavailable`` (RFC 6749 §4.1.2.1: "unable to handle the request due to a
    temporary overloading"): it tells a client to come back later, as the status and
    ``Retry-After`` do, where ``invalid_request`` would tell it the request itself is wrong.
    Like every OAuth error response here it carries ``Cache-Control: no-store``.
    """

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)


class CommitThenRaise(Exception):
    """Raised by a grant whose failure changed state that must persist (a replayed code's
    revocations): the unit of work commits, then ``error`` is answered."""

    def __init__(self, error: OAuthError) -> None:
        super().__init__(error.description)
        self.error = error


class AuthorizationError(Exception):
    """RFC 6749 §4.1.2.1 error sent back to the client's (already validated) redirect URI."""

    def __init__(self, error: str, description: str, *, redirect_uri: str, state: str | None,
                 issuer: str, detail: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state
        self.issuer = issuer
        self.detail = detail

    def location(self) -> str:
        params = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            params["state"] = self.state
        params["iss"] = self.issuer  # RFC 9207 §2: errors too
        return append_query(self.redirect_uri, params)


class ErrorPage(Exception):
    """An error shown to the person, never redirected: unknown client, bad redirect URI, bad CSRF."""

    def __init__(self, title: str, message: str, *, status_code: int = 400, detail: str | None = None,
                 params: dict[str, str] | None = None, client_id: str | None = None,
                 redirect_uri: str | None = None) -> None:
        """``title`` and ``message`` are message ids (English); ``params`` fill ``%(name)s`` after translation.

        ``client_id`` and ``redirect_uri``: what the request sent, shown to the app's developer as
        text (escaped like everything on a page; the redirect URI is never a link, and never
        redirected to). Only values the request itself carried belong here, never anything the
        server stores about the client (its registered redirect URIs stay private). Anyone can
        make a link that puts words here, so they are labelled as what they are, in code type,
        with invisible and direction-changing characters written out (``as_sent``).
        """
        super().__init__(message)
        self.title = title
        self.message = message
        self.params = params
        self.status_code = status_code
        self.detail = detail
        self.client_id = client_id
        self.redirect_uri = redirect_uri


def as_sent(value: str | None) -> str | None:
    """A request's value as the developer should read it: format characters (bidi overrides,
    zero-width spaces) and line separators written as ``\\uXXXX``, so what shows is what came."""
    if value is None:
        return None
    return "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in ("Cf", "Zl", "Zp") else ch for ch in value)


def append_query(uri: str, params: dict[str, str]) -> str:
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{urlencode(params)}"


def oauth_error_response(exc: OAuthError) -> JSONResponse:
    headers = {**NO_STORE, **exc.headers}
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


def oauth_error(request: Request, exc: OAuthError) -> Response:
    """Where every OAuth error becomes a response (the app's handler and the hot lane's)."""
    log.info("oauth error %s on %s: %s", exc.error, redact_target(request.url.path), exc.detail or exc.description)
    if exc.audit:
        services = getattr(request.app.state, "services", None)
        if services is not None:
            services.audit.record(**exc.audit, path=redact_target(request.url.path))
    return oauth_error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    from authserver.web.i18n import gettext_for
    from authserver.web.pages import (
        PasswordChangeRequired,
        SecondFactorRequired,
        SignInRequired,
        password_change_location,
        second_factor_setup_location,
        sign_in_location,
    )

    async def on_oauth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OAuthError)
        return oauth_error(request, exc)

    async def on_authorization_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthorizationError)
        log.info("authorization error %s: %s", exc.error, exc.detail or exc.description)
        return RedirectResponse(exc.location(), status_code=303, headers=NO_STORE)

    async def on_error_page(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ErrorPage)
        log.info("error page %r on %s: %s", exc.title, redact_target(request.url.path), exc.detail or exc.message)
        templates = request.app.state.templates
        # Titles and messages are message ids (marked with N_); the page is in the person's language.
        return templates.TemplateResponse(
            request, "error.html", {"title": gettext_for(request, exc.title),
                                    "message": gettext_for(request, exc.message) % exc.params
                                    if exc.params else gettext_for(request, exc.message),
                                    "client_id": as_sent(exc.client_id), "redirect_uri": as_sent(exc.redirect_uri),
                                    "issuer": request.app.state.services.settings.issuer},
            status_code=exc.status_code, headers=NO_STORE,
        )

    async def on_sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse(sign_in_location(request, exc.next_path), status_code=303, headers=NO_STORE)

    async def on_password_change_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PasswordChangeRequired)
        return RedirectResponse(password_change_location(request, exc.next_path), status_code=303, headers=NO_STORE)

    async def on_second_factor_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SecondFactorRequired)
        return RedirectResponse(second_factor_setup_location(request, exc.next_path), status_code=303,
                                headers=NO_STORE)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        # JSON APIs under FastAPI's own validation still answer in OAuth's shape.
        # Locations and types only: the errors also carry the submitted input (passwords, tokens).
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        log.info("request validation failed on %s: %s", redact_target(request.url.path),
                 [(e.get("loc"), e.get("type")) for e in errors])
        return oauth_error_response(InvalidRequest("the request is malformed"))

    app.add_exception_handler(OAuthError, on_oauth_error)
    app.add_exception_handler(AuthorizationError, on_authorization_error)
    app.add_exception_handler(ErrorPage, on_error_page)
    app.add_exception_handler(SignInRequired, on_sign_in_required)
    app.add_exception_handler(PasswordChangeRequired, on_password_change_required)
    app.add_exception_handler(SecondFactorRequired, on_second_factor_required)
    app.add_exception_handler(RequestValidationError, on_validation_error)


class FieldError(AppError):
    """Domain rules broken by form fields' values; pages show each message next to its field.

    ``FieldError("name", "…")`` for one field, ``FieldError({"name": "…", "redirect_uris": "…"})``
    when a form broke several rules at once. The message (``str(exc)``) is the first of them, for
    callers that show one line (the CLI).
    """

    def __init__(self, field: str | dict[str, str], message: str = "") -> None:
        self.errors = dict(field) if isinstance(field, dict) else {field: message}
        super().__init__(next(iter(self.errors.values())))
