"""The site's own pages outside any flow: the favicon every browser asks for.

Pages link ``static/favicon.svg`` themselves (``base.html``); ``/favicon.ico`` is what browsers
fetch for anything else they show (a JSON document, the metadata), always at the host's root,
whatever the issuer's path, so it is mounted there and points at the same file.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

FAVICON_MAX_AGE = 86400


def router(issuer_path: str) -> APIRouter:
    api = APIRouter()

    @api.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return RedirectResponse(f"{issuer_path}/static/favicon.svg", status_code=301,
                                headers={"Cache-Control": f"public, max-age={FAVICON_MAX_AGE}"})

    return api
