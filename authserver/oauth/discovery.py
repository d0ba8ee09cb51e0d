"""Discovery: AS metadata at every URL MCP clients try, and the JWKS."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.catalog import repository as catalog
from authserver.deps import ServicesDep
from authserver.oauth.metadata import build_metadata, discovery_paths
from authserver.settings import Settings

# Metadata changes only when scopes or the registration policy do; a short cache keeps discovery
# free of queries. The policy has its own (shorter) cache bound and is part of the key, so
# ``registration_endpoint`` follows it within that bound.
METADATA_TTL = 10.0


def router(settings: Settings) -> APIRouter:
    api = APIRouter()
    cache: dict[bool, tuple[float, bytes]] = {}

    def metadata(services: ServicesDep) -> Response:
        registration = services.policy.current().registration_enabled
        hit = cache.get(registration)
        if hit is None or time.monotonic() - hit[0] > METADATA_TTL:
            with services.db.read_session() as session:
                public = [s.name for s in catalog.list_scopes(session) if s.public]
            body = json.dumps(build_metadata(services.settings, public, registration=registration),
                              separators=(",", ":")).encode()
            hit = (time.monotonic(), body)
            cache[registration] = hit
        return Response(hit[1], media_type="application/json",
                        headers={"Cache-Control": "public, max-age=60"})

    for path in discovery_paths(settings):
        api.add_api_route(path, metadata, methods=["GET"], include_in_schema=False)

    @api.get(f"{settings.issuer_path}/jwks.json", include_in_schema=False)
    async def jwks(services: ServicesDep) -> Response:
        # Served from memory; only a stale key snapshot (every 30 s) costs a thread hop and a query.
        keys = services.keys
        snapshot = keys.snapshot() if keys.is_fresh() else await run_in_threadpool(keys.snapshot)
        return Response(snapshot.jwks_body, media_type="application/jwk-set+json",
                        headers={"Cache-Control": "public, max-age=300"})

    @api.get("/healthz", include_in_schema=False)
    def health(services: ServicesDep) -> dict[str, str]:
        services.keys.snapshot()
        return {"status": "ok"}

    return api
