"""The site's own pages outside any flow: the home page at the issuer's root, and the favicon.

``/`` (under the issuer's path) names the server and sends a person on: to their account when
signed in, to the sign-in page otherwise. It reads one session and writes nothing.

Pages link ``static/favicon.svg`` themselves (``base.html``); ``/favicon.ico`` is what browsers
fetch for anything else they show (a JSON document, the metadata), always at the host's root,
whatever the issuer's path, so it is mounted there and points at the same file.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from authserver.deps import ServicesDep
from authserver.interaction.cookies import Cookies
from authserver.oauth.metadata import discovery_paths
from authserver.web import pages

FAVICON_MAX_AGE = 86400


def router(cookies: Cookies, issuer_path: str) -> APIRouter:
    """Mounted without a prefix: each route says where it lives."""
    api = APIRouter()

    def home(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = pages.signed_in(session, request, cookies)
        return pages.render(request, cookies, "home.html", {
            "may_read_console": who is not None and who.user.may_read_console,
            "metadata_url": discovery_paths(services.settings)[0],
        }, who=who)

    api.add_api_route(f"{issuer_path}/", home, methods=["GET"], include_in_schema=False)
    if issuer_path:
        api.add_api_route(issuer_path, home, methods=["GET"], include_in_schema=False)

    @api.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return RedirectResponse(f"{issuer_path}/static/favicon.svg", status_code=301,
                                headers={"Cache-Control": f"public, max-age={FAVICON_MAX_AGE}"})

    return api
