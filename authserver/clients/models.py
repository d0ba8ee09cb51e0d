from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow
from authserver.net import Network, parse_networks

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
SELF_REGISTERED = ("dynamic", "metadata")


@lru_cache(maxsize=4096)
def networks_of(allowed_ips: tuple[str, ...]) -> tuple[Network, ...]:
    """A client's stored allow-list as networks (validated when it was stored; parsed once per value)."""
    return parse_networks(allowed_ips)


def scopes_at(kind: str, client_scopes: Iterable[str], resource_scopes: Iterable[str]) -> set[str]:
    """What a client of ``kind`` with allow-list ``client_scopes`` may have at a resource (see Client)."""
    allowed = set(resource_scopes)
    return allowed if kind in SELF_REGISTERED else allowed & set(client_scopes)


class Client(Base):
    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(2048), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # How the client came to exist: "static" (the operator), "dynamic" (RFC 7591) or "metadata"
    # (a Client ID Metadata Document).
    kind: Mapped[str] = mapped_column(String(16), default="static")
    secret_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40), default="none")
    application_type: Mapped[str] = mapped_column(String(16), default="web")
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Allow-lists: what this client may ever ask for (default deny).
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    resources: Mapped[list[str]] = mapped_column(JSON, default=list)
    # What a request without `scope` gets: the read-only part of the allow-list unless set.
    default_scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # A resource server's own client may introspect tokens for its `resources`.
    can_introspect: Mapped[bool] = mapped_column(default=False)
    # The operator vouches for this client (static clients are verified by default).
    verified: Mapped[bool] = mapped_column(default=False)
    disabled: Mapped[bool] = mapped_column(default=False)
    # RFC 9449 §5.2: every token request of this client must carry a DPoP proof.
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    registration_token_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    extra_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # private_key_jwt (RFC 7523 §2.2): the client's public keys, inline (a JWK Set) or at an https URL,
    # and the one signing algorithm it registered (None: any of client_assertion.ALGORITHMS).
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    jwks_uri: Mapped[str | None] = mapped_column(String(2048), default=None)
    token_endpoint_auth_signing_alg: Mapped[str | None] = mapped_column(String(16), default=None)
    # Where it may authenticate from (CIDR blocks; empty: anywhere). An operator control, never
    # settable by the client itself (see oauth.client_auth).
    allowed_ips: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    # Dynamically registered clients that never complete a consent expire.
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # Last token issued to it; written at most once a minute (tokens.issue.mark_used), so it is coarse.
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    @property
    def allowed_networks(self) -> tuple[Network, ...]:
        return networks_of(tuple(self.allowed_ips or ()))

    @property
    def signing_alg(self) -> str | None:
        return self.token_endpoint_auth_signing_alg

    @property
    def self_registered(self) -> bool:
        """Registered by the client itself (RFC 7591 or a metadata document), not by the operator.

        Such clients have no operator-set allow-lists: what they may ask for is bounded by
        each resource's allowed scopes and by the person's consent (MCP step-up relies on it).
        """
        return self.kind in SELF_REGISTERED

    def may_use_resource(self, uri: str) -> bool:
        return self.self_registered or uri in self.resources

    def scopes_at(self, resource_scopes: list[str]) -> set[str]:
        return scopes_at(self.kind, self.scopes, resource_scopes)
