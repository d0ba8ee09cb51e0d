"""All console routes under ``/admin``; each section is its own module.

``AUTHSERVER_ADMIN_ALLOWED_IPS`` (CIDR blocks; empty: any address) fences the whole console: from
any other address every page and every POST answers 403, before the session is even read, so a
signed-in admin's stolen cookie is of no use from outside (and nobody there is sent to sign in).
The address is the connection's, or the one a trusted proxy forwarded (``net``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request

from authserver.admin import audit_log, catalog, clients, dashboard, keys, policy, users
from authserver.errors import ErrorPage
from authserver.interaction.cookies import Cookies
from authserver.net import Network, in_networks, parse_address
from authserver.web.i18n import N_


def require_admin_address(allowed: tuple[Network, ...]) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        ip = request.client.host if request.client else None
        if allowed and not in_networks(parse_address(ip), allowed):
            raise ErrorPage(N_("Not allowed"), N_("The console cannot be reached from this address."),
                            status_code=403, detail=f"admin console refused to {ip}")

    return check


def router(cookies: Cookies, allowed: tuple[Network, ...] = ()) -> APIRouter:
    api = APIRouter(dependencies=[Depends(require_admin_address(allowed))] if allowed else [])
    for section in (dashboard, clients, catalog, users, keys, policy, audit_log):
        # The prefix goes on each section, so the dashboard can be ``/admin`` itself (path "").
        api.include_router(section.router(cookies), prefix="/admin")
    return api
