"""Clients as the hot paths see them: an immutable view, read at most once per cache period.

Client authentication at the token and introspection endpoints needs the same handful of
columns on every request. ``ClientCache`` keeps each client's view for at most
``AUTHSERVER_CACHE_SECONDS`` (see ``readcache``): a disabled client or a rotated secret is
refused on this process at once and on every other within that bound. Unknown client_ids are
remembered too (as None), so a flood of made-up ids costs one read each per period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authserver.clients.models import SELF_REGISTERED, Client, scopes_at
from authserver.db import Database
from authserver.net import Network
from authserver.readcache import ReadCache


@dataclass(frozen=True, slots=True)
class ClientView:
    client_id: str
    kind: str
    secret_hash: str | None
    token_endpoint_auth_method: str
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    default_scopes: tuple[str, ...]
    can_introspect: bool
    disabled: bool
    expires_at: datetime | None
    dpop_bound_access_tokens: bool = False
    # private_key_jwt keys and the client's IP allow-list (empty: anywhere), see oauth.client_auth.
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    signing_alg: str | None = None
    allowed_networks: tuple[Network, ...] = ()

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    # The same allow-list rules as ``Client``'s.
    def may_use_resource(self, uri: str) -> bool:
        return self.kind in SELF_REGISTERED or uri in self.resources

    def scopes_at(self, resource_scopes: list[str]) -> set[str]:
        return scopes_at(self.kind, self.scopes, resource_scopes)

    @classmethod
    def of(cls, client: Client) -> ClientView:
        return cls(client.client_id, client.kind, client.secret_hash, client.token_endpoint_auth_method,
                   tuple(client.grant_types), tuple(client.scopes), tuple(client.resources),
                   tuple(client.default_scopes), client.can_introspect, client.disabled, client.expires_at,
                   client.dpop_bound_access_tokens,
                   client.jwks, client.jwks_uri, client.token_endpoint_auth_signing_alg, client.allowed_networks)


class ClientCache:
    def __init__(self, db: Database, ttl: float) -> None:
        self._db = db
        self.entries: ReadCache[ClientView | None] = ReadCache(ttl)

    async def get(self, client_id: str) -> ClientView | None:
        """The registered client (metadata-document mirrors excluded: see ``ClientRegistry``), or None."""
        return await self.entries.fetch(client_id, lambda: self._read(client_id))

    def _read(self, client_id: str) -> ClientView | None:
        with self._db.read_session() as session:
            client = session.get(Client, client_id)
            return None if client is None or client.kind == "metadata" else ClientView.of(client)
