"""Console section: registration policy — mode, metadata-document host patterns, initial access tokens.

Saved policy lives in ``server_settings`` (``policy.repository``); every node sees it within the
policy cache bound (``policy.cache``, ≤ 5 s), this node at once. A new initial access token is
shown once, on the page the POST answers with (never in a redirect or a cookie); only its hash
is kept.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.admin import common
from authserver.admin.forms import NOT_FOUND, Reply, field_errors, unit_of_work
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import AppError, FieldError
from authserver.interaction.cookies import Cookies
from authserver.policy import repository as policy
from authserver.policy.models import InitialAccessToken
from authserver.services import Services
from authserver.web import pages
from authserver.web.pages import SignedIn

MODE_WORDS = {
    "open": "Open: any client may register itself (RFC 7591), as most MCP clients expect.",
    "token": "Token: registering needs an initial access token made below (or the environment's).",
    "off": "Off: no new registrations; /register answers 404 and the metadata names no registration endpoint.",
}


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    def page(request: Request, session: Session, services: Services, who: SignedIn, *, status_code: int = 200,
             values: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
             token_values: dict[str, str] | None = None, new_token: str | None = None) -> Response:
        current = policy.load(session, services.settings)
        shown = values or {"mode": current.mode, "allowed_hosts": "\n".join(current.allowed_hosts),
                           "denied_hosts": "\n".join(current.denied_hosts)}
        return pages.render(request, cookies, "admin/policy.html", {
            "may_write": common.may_write(who), "policy": current, "values": shown, "modes": MODE_WORDS,
            "errors": errors or {}, "tokens": policy.list_tokens(session), "now": utcnow(),
            "token_values": token_values or {"label": "", "expires_at": ""}, "new_token": new_token,
            "env_token": bool(services.settings.registration_initial_access_token),
            "cache_seconds": services.settings.policy_cache_seconds,
        }, who=who, status_code=status_code)

    def done(request: Request, message: str) -> Response:
        response = pages.see_other(pages.local(request, "/admin/policy"))
        pages.flash(cookies, request, response, message)
        return response

    @api.get("/policy")
    def show(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return page(request, session, services, who)

    @api.post("/policy")
    async def save(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)
        values = {"mode": form.get("mode", ""), "allowed_hosts": form.get("allowed_hosts", ""),
                  "denied_hosts": form.get("denied_hosts", "")}

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            try:
                allowed = policy.parse_patterns(values["allowed_hosts"], "allowed_hosts")
                denied = policy.parse_patterns(values["denied_hosts"], "denied_hosts")
                policy.save(session, values["mode"], allowed, denied, by=who.user.username)
            except AppError as exc:
                raise Reply(page(request, session, services, who, status_code=400, values=values,
                                 errors=field_errors(exc))) from None
            common.audit(session, who, request, "policy.updated", mode=values["mode"], allowed_hosts=list(allowed),
                         denied_hosts=list(denied))
            return done(request, "Registration policy saved; every server node applies it within "
                                 f"{services.settings.policy_cache_seconds:g} seconds.")

        response = await run_in_threadpool(unit_of_work, services.db, work)
        services.policy.invalidate()  # this node at once; the others within the cache bound
        return response

    @api.post("/policy/tokens")
    async def create_token(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)
        token_values = {"label": form.get("label", ""), "expires_at": form.get("expires_at", "").strip()}

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            try:
                row, value = policy.create_token(session, token_values["label"],
                                                 _expiry(token_values["expires_at"]), by=who.user.username)
            except AppError as exc:
                raise Reply(page(request, session, services, who, status_code=400, token_values=token_values,
                                 errors=field_errors(exc))) from None
            common.audit(session, who, request, "initial_access_token.created", token_id=str(row.id),
                         label=row.label, expires_at=row.expires_at.isoformat() if row.expires_at else None)
            # Rendered here, not redirected: the value must not travel in a URL or a cookie.
            return page(request, session, services, who, new_token=value)

        return await run_in_threadpool(unit_of_work, services.db, work)

    @api.get("/policy/tokens/{token_id}/revoke")
    def confirm_revoke(request: Request, services: ServicesDep, token_id: str) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            row = _token(session, token_id)
            return pages.render(request, cookies, "admin/confirm.html", {
                "section": "policy", "heading": f"Revoke the initial access token “{row.label}”?",
                "explanation": ["Registrations that present it are refused from now on (401). Clients it "
                                "already registered are not affected."],
                "items": [], "action": pages.local(request, f"/admin/policy/tokens/{row.id}/revoke"), "hidden": {},
                "button": "Revoke token", "cancel": pages.local(request, "/admin/policy")}, who=who)

    @api.post("/policy/tokens/{token_id}/revoke")
    async def revoke(request: Request, services: ServicesDep, token_id: str) -> Response:
        form, _ = await pages.read_form(request)

        def work(session: Session) -> Response:
            who = common.writer(session, request, cookies, form)
            row = policy.revoke_token(session, _token(session, token_id).id)
            common.audit(session, who, request, "initial_access_token.revoked", token_id=str(row.id), label=row.label)
            return done(request, f"Initial access token “{row.label}” revoked.")

        return await run_in_threadpool(unit_of_work, services.db, work)

    return api


def _expiry(value: str) -> datetime | None:
    """``YYYY-MM-DD`` (end of that day, UTC) or ``YYYY-MM-DDTHH:MM`` (UTC), or empty for no expiry."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FieldError("expires_at", "write the expiry as YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)") from None
    if len(value) == 10:
        parsed = parsed.replace(hour=23, minute=59, second=59)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _token(session: Session, token_id: str) -> InitialAccessToken:
    try:
        return policy.require_token(session, uuid.UUID(token_id))
    except (ValueError, AppError):
        raise NOT_FOUND from None
