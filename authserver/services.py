"""The services every request handler needs, built once per app (or per CLI call).

Lives apart from the app factory so routers, grants and domains can depend on it
without importing ``app`` (dependencies point down).
"""

from __future__ import annotations

from dataclasses import dataclass

from authserver.audit.buffer import AuditBuffer
from authserver.catalog.cache import ResourceCache
from authserver.clients.cache import ClientCache
from authserver.db import Database
from authserver.interaction.cookies import Cookies
from authserver.interaction.signin import Throttle
from authserver.keys.crypto import KeyEncryptor
from authserver.keys.ring import KeyRing
from authserver.limits import Limiter, build_limiter
from authserver.limits.shared import SharedRate
from authserver.oauth.client_assertion import ClientAssertions
from authserver.policy.cache import PolicyCache
from authserver.readcache import ReadCache
from authserver.settings import Settings
from authserver.tokens.access import AccessTokenInfo
from authserver.tokens.purge import Purger
from authserver.users import passwords

# Writing to these tables can change who may get or keep a token: a commit here empties the
# hot-path caches of this process at once (the other processes see it within the cache period).
INVALIDATING_TABLES = ("clients", "resources", "users", "consents", "revoked_access_tokens")


@dataclass
class Services:
    """Everything a request handler needs, built once per app."""

    settings: Settings
    db: Database
    keys: KeyRing
    secret: str
    # Seals the successor token response kept for the refresh race grace window.
    grace_sealer: KeyEncryptor
    purger: Purger
    # Browser cookies, CSRF tokens and signed flash messages for every page.
    cookies: Cookies
    # The registration policy as saved in the console (environment defaults), cached ≤ 5 s.
    policy: PolicyCache
    # Hot-path reads, each kept ≤ AUTHSERVER_CACHE_SECONDS (see readcache): clients, the scopes
    # of resources, and the verdict on each access token presented for introspection.
    clients: ClientCache
    resources: ResourceCache
    verdicts: ReadCache[AccessTokenInfo | None]
    # Audit events of work that writes nothing else (client_credentials), written in batches.
    audit: AuditBuffer
    # private_key_jwt: checks client assertions, caches clients' jwks_uri keys.
    assertions: ClientAssertions
    # Abuse limits shared by every node (database, or Redis when configured; see limits), and the
    # per-client token request rate counted locally and synchronised with them (limits.shared).
    limits: Limiter
    token_rate: SharedRate
    self_registered_token_rate: SharedRate
    # Sign-in throttling per typed username and address, per username, per address (interaction.signin).
    signin_throttle: Throttle

    def clear_caches(self) -> None:
        self.clients.entries.clear()
        self.resources.entries.clear()
        self.verdicts.clear()


def build_services(settings: Settings, db: Database | None = None) -> Services:
    secret = settings.resolved_secret_key()
    passwords.configure(settings.argon2_concurrency)
    db = db or Database(settings.database_url)
    keys = KeyRing(db, KeyEncryptor(secret), settings.key_retention)
    ttl = settings.cache_seconds
    client_cache = ClientCache(db, ttl)
    limits = build_limiter(settings, db)
    services = Services(settings=settings, db=db, keys=keys, secret=secret,
                        grace_sealer=KeyEncryptor(secret, "refresh-grace"),
                        purger=Purger(db, settings.refresh_reuse_grace, settings.purge_interval,
                                      audit_retention_days=settings.audit_retention_days),
                        cookies=Cookies(settings, secret),
                        policy=PolicyCache(db, settings), clients=client_cache,
                        resources=ResourceCache(db, ttl), verdicts=ReadCache(ttl, max_entries=50_000),
                        audit=AuditBuffer(db, flush_seconds=settings.audit_flush_seconds),
                        assertions=ClientAssertions(db, settings.issuer, client_cache,
                                                    allow_loopback_http=settings.cimd_allow_loopback_http),
                        limits=limits, token_rate=token_rate(limits, settings, "token:", settings.token_rate_limit),
                        self_registered_token_rate=token_rate(limits, settings, "token-self:",
                                                              settings.self_registered_token_rate_limit),
                        signin_throttle=Throttle(limits, settings, secret))
    db.on_commit(INVALIDATING_TABLES, services.clear_caches)
    return services


def token_rate(limits: Limiter, settings: Settings, prefix: str, limit: int) -> SharedRate:
    return SharedRate(limits, prefix=prefix, limit=limit, window=settings.token_rate_window,
                      sync_seconds=settings.limits_sync_seconds)
