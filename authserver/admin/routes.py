"""All console routes under ``/admin``; each section is its own module."""

from __future__ import annotations

from fastapi import APIRouter

from authserver.admin import audit_log, catalog, clients, dashboard, keys, policy, users
from authserver.interaction.cookies import Cookies


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()
    for section in (dashboard, clients, catalog, users, keys, policy, audit_log):
        # The prefix goes on each section, so the dashboard can be ``/admin`` itself (path "").
        api.include_router(section.router(cookies), prefix="/admin")
    return api
