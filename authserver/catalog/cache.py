"""The scopes each resource allows, as the ``client_credentials`` grant reads them on every request.

Kept per resource for at most ``AUTHSERVER_CACHE_SECONDS`` (see ``readcache``).
"""

from __future__ import annotations

from authserver.catalog.models import Resource
from authserver.db import Database
from authserver.readcache import ReadCache


class ResourceCache:
    def __init__(self, db: Database, ttl: float) -> None:
        self._db = db
        self.entries: ReadCache[tuple[str, ...] | None] = ReadCache(ttl, max_entries=2_000)

    async def scopes(self, uri: str) -> tuple[str, ...] | None:
        """The resource's allowed scopes, None when no such resource is registered."""
        return await self.entries.fetch(uri, lambda: self._read(uri))

    def _read(self, uri: str) -> tuple[str, ...] | None:
        with self._db.read_session() as session:
            resource = session.get(Resource, uri)
            return None if resource is None else tuple(resource.scopes)
