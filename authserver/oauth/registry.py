"""Where a ``client_id`` is resolved to a client: one place for every endpoint.

Pre-registered and RFC 7591 clients live in the clients table. A ``client_id`` that is
an https URL is a Client ID Metadata Document (MCP): the document is fetched (SSRF-safe,
cached by its HTTP cache headers, see ``clients.metadata_document``) and mirrored into
the clients table as kind ``metadata`` so codes, consents and tokens can refer to it.
Routes call ``prefetch`` before opening a database transaction, so no transaction ever
waits on the network.

Each address (IPv6: its /64) may cause AUTHSERVER_CIMD_FETCH_RATE_LIMIT fetches (cache misses)
per AUTHSERVER_CIMD_FETCH_RATE_WINDOW seconds, counted on the shared limit counters so the limit
holds across nodes: otherwise one page or script sending many URLs as ``client_id`` would make
us fetch each of them. Past the limit nothing is fetched (and nothing cached: another address
may still fetch that URL); the request is answered as for a document not available yet.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from authserver.clients import repository as clients
from authserver.clients.metadata_document import (
    ClientMetadata,
    HostPolicy,
    MetadataDocumentError,
    MetadataFetcher,
    is_metadata_document_url,
)
from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.limits import Limiter
from authserver.net import address_group
from authserver.policy.cache import PolicyCache
from authserver.settings import Settings

log = logging.getLogger("authserver.registry")


class ClientLookupError(Exception):
    """The client cannot be used; ``public`` says why in words safe to show."""

    def __init__(self, public: str) -> None:
        super().__init__(public)
        self.public = public


class ClientRegistry:
    def __init__(self, settings: Settings | None = None, fetcher: MetadataFetcher | None = None,
                 policy: PolicyCache | None = None, limits: Limiter | None = None) -> None:
        """``policy``: the operator's current host patterns for metadata documents (else the environment's)."""
        self._loopback = bool(settings and settings.cimd_allow_loopback_http)
        self._ttl = settings.dynamic_client_ttl if settings else 86400
        self._fetcher = fetcher
        self._limits = limits
        self._fetch_limit = settings.cimd_fetch_rate_limit if settings else 0
        self._fetch_window = settings.cimd_fetch_rate_window if settings else 60
        if fetcher is None and settings is not None and settings.cimd_enabled:
            hosts: Callable[[], HostPolicy] | None = (lambda: policy.current().hosts) if policy is not None else None
            self._fetcher = MetadataFetcher(allow_loopback_http=self._loopback,
                                            allowed_hosts=settings.cimd_allowed_hosts or None,
                                            denied_hosts=settings.cimd_denied_hosts or None, host_policy=hosts)

    def is_document_url(self, client_id: str | None) -> bool:
        return bool(self._fetcher and client_id
                    and is_metadata_document_url(client_id, allow_loopback_http=self._loopback))

    def prefetch(self, client_id: str | None, ip: str | None = None) -> bool:
        """Warm the document cache outside any transaction; errors surface later in ``find``.
        False when this address has caused its share of fetches (nothing was fetched)."""
        if self._fetcher is None or not client_id or not self.is_document_url(client_id):
            return True
        group = address_group(ip)
        if self._limits is not None and self._fetch_limit and group and self._fetcher.would_fetch(client_id):
            count = self._limits.hit(f"cimd:{group}", self._fetch_window)
            if count.count > self._fetch_limit:
                log.info("client metadata document %s not fetched: %s caused %d fetches", client_id, group,
                         count.count)
                return False
        # A failure is cached too; find() raises it with its public reason.
        with contextlib.suppress(MetadataDocumentError):
            self._fetcher.fetch(client_id)
        return True

    def document(self, client_id: str) -> ClientMetadata | None:
        """The prefetched document of a metadata-document client_id (cache only), None when unusable."""
        if self._fetcher is None or not self.is_document_url(client_id):
            return None
        try:
            return self._fetcher.fetch(client_id, network=False)
        except MetadataDocumentError:
            return None

    def find(self, session: Session, client_id: str) -> Client | None:
        """The usable client, None when unknown; raises ClientLookupError when a document is unacceptable
        (or was not prefetched)."""
        if len(client_id) > 2048:
            return None
        if self._fetcher is not None and self.is_document_url(client_id):
            try:
                # Cache only: prefetch() already went to the network outside the transaction.
                document = self._fetcher.fetch(client_id, network=False)
            except MetadataDocumentError as exc:
                log.info("client metadata document %s refused: %s", client_id, exc.detail or exc.public)
                raise ClientLookupError(exc.public) from None
            return _mirror(session, document, self._ttl)
        client = clients.get(session, client_id)
        if client is None or client.kind == "metadata":
            return None  # a mirrored document is only usable while documents are accepted and fetched
        if client.expires_at is not None and client.expires_at <= utcnow():
            return None
        return client


def _mirror(session: Session, document: ClientMetadata, ttl: int) -> Client:
    """The document as a clients row. A ``private_key_jwt`` document's keys are read from the document
    itself when an assertion is checked (``client_assertion``); the row keeps them for the console."""
    client = clients.get(session, document.client_id)
    if client is None:
        # Like an RFC 7591 registration, the mirror expires unless a person consents to it.
        client = Client(client_id=document.client_id, kind="metadata", verified=False, scopes=[], resources=[],
                        default_scopes=[], token_endpoint_auth_method="none",
                        expires_at=utcnow() + timedelta(seconds=ttl))
        session.add(client)
    elif client.kind != "metadata":
        raise ClientLookupError("this client_id is registered differently")
    client.name = document.client_name
    client.token_endpoint_auth_method = document.token_endpoint_auth_method
    client.jwks, client.jwks_uri = document.jwks, document.jwks_uri
    client.dpop_bound_access_tokens = document.dpop_bound_access_tokens
    client.redirect_uris = list(document.redirect_uris)
    client.grant_types = list(document.grant_types)
    client.application_type = "native" if all(u.startswith("http://") for u in document.redirect_uris) else "web"
    client.extra_metadata = {k: v for k, v in (("client_uri", document.client_uri), ("logo_uri", document.logo_uri),
                                               ("scope", document.scope)) if v}
    session.flush()
    return client
