"""Console section: signing keys — list (active, retired but still published, retired) → Rotate.

Rotation calls the same domain function as ``authserver keys rotate`` (``KeyRing.rotate``); the
audit event is written in the rotation's transaction. Other nodes sign with the new key within
their key ring's refresh interval (5 s), and verify tokens it signed at once (``KeyRing.public_key``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.admin import common
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.interaction.cookies import Cookies
from authserver.keys.ring import all_keys
from authserver.services import Services
from authserver.web import pages
from authserver.web.pages import SignedIn


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    def page(request: Request, who: SignedIn, template: str, **context: Any) -> Response:
        return pages.render(request, cookies, template, {"may_write": common.may_write(who), **context}, who=who)

    @api.get("/keys")
    def keys(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            return page(request, who, "admin/keys.html", keys=all_keys(session), now=utcnow())

    @api.get("/keys/rotate")
    def confirm_rotate(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            until = utcnow() + timedelta(seconds=services.keys.retention)
            return page(request, who, "admin/confirm.html", section="keys", heading="Rotate the signing key?",
                        explanation=[
                            "A new key signs every token from now on.",
                            f"The current key stops signing but stays published in /jwks.json until "
                            f"{until:%Y-%m-%d %H:%M} UTC, so tokens it already signed keep verifying until "
                            "they expire. Resource servers that cache the JWKS fetch it again when they meet "
                            "the new key id.",
                        ], items=[], action=pages.local(request, "/admin/keys/rotate"), hidden={},
                        button="Rotate key", cancel=pages.local(request, "/admin/keys"))

    @api.post("/keys/rotate")
    async def rotate(request: Request, services: ServicesDep) -> Response:
        form, _ = await pages.read_form(request)
        return await run_in_threadpool(_rotate, request, services, cookies, form)

    return api


def _rotate(request: Request, services: Services, cookies: Cookies, form: Any) -> Response:
    def audit(session: Session, kid: str) -> None:
        # Role and CSRF checked inside the rotation's transaction: a refusal rolls the new key back.
        who = common.writer(session, request, cookies, form)
        common.audit(session, who, request, "key.rotated", kid=kid)

    kid = services.keys.rotate(audit)
    response = pages.see_other(pages.local(request, "/admin/keys"))
    pages.flash(cookies, request, response, f"New signing key {kid} is active.")
    return response
