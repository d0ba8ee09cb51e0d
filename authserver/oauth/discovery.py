"""Discovery: AS metadata at every URL MCP clients try, and the JWKS.

Both are served as precomputed bytes with an ETag (``If-None-Match`` gets 304). They are
plain Starlette endpoints on the hot lane (see ``fastlane``); a thread hop and a query happen
only when a cached copy has aged out.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from authserver.catalog import repository as catalog
from authserver.oauth.metadata import build_metadata
from authserver.services import Services

Endpoint = Callable[[Request], Awaitable[Response]]

# Metadata changes only when scopes or the registration policy do; a short cache keeps discovery
# free of queries. The policy has its own (shorter) cache bound and is part of the key, so
# ``registration_endpoint`` follows it within that bound.
METADATA_TTL = 10.0
METADATA_CACHE = "public, max-age=60"
JWKS_CACHE = "public, max-age=300"


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def cached_bytes(request: Request, body: bytes, etag: str, media_type: str, cache_control: str) -> Response:
    headers = {"Cache-Control": cache_control, "ETag": etag}
    given = request.headers.get("if-none-match", "")
    if etag in given or given.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def metadata_endpoint(services: Services) -> Endpoint:
    cache: dict[bool, tuple[float, bytes, str]] = {}

    def build(registration: bool) -> tuple[float, bytes, str]:
        with services.db.read_session() as session:
            public = [s.name for s in catalog.list_scopes(session) if s.public]
        body = json.dumps(build_metadata(services.settings, public, registration=registration),
                          separators=(",", ":")).encode()
        return time.monotonic(), body, etag_of(body)

    async def metadata(request: Request) -> Response:
        policy = services.policy.current() if services.policy.is_fresh() else \
            await run_in_threadpool(services.policy.current)
        registration = policy.registration_enabled
        hit = cache.get(registration)
        if hit is None or time.monotonic() - hit[0] > METADATA_TTL:
            hit = cache[registration] = await run_in_threadpool(build, registration)
        return cached_bytes(request, hit[1], hit[2], "application/json", METADATA_CACHE)

    return metadata


def jwks_endpoint(services: Services) -> Endpoint:
    etags: dict[bytes, str] = {}

    async def jwks(request: Request) -> Response:
        snapshot = await services.keys.fresh()
        body = snapshot.jwks_body
        etag = etags.get(body)
        if etag is None:
            etags.clear()  # only the current key set's tag is worth keeping
            etag = etags[body] = etag_of(body)
        return cached_bytes(request, body, etag, "application/jwk-set+json", JWKS_CACHE)

    return jwks


def health_endpoint(services: Services) -> Endpoint:
    async def health(request: Request) -> Response:
        await services.keys.fresh()
        return Response(b'{"status":"ok"}', media_type="application/json")

    return health
