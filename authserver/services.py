"""The services every request handler needs, built once per app (or per CLI call).

Lives apart from the app factory so routers, grants and domains can depend on it
without importing ``app`` (dependencies point down).
"""

from __future__ import annotations

from dataclasses import dataclass

from authserver.db import Database
from authserver.interaction.cookies import Cookies
from authserver.keys.crypto import KeyEncryptor
from authserver.keys.ring import KeyRing
from authserver.policy.cache import PolicyCache
from authserver.settings import Settings
from authserver.tokens.purge import Purger


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


def build_services(settings: Settings, db: Database | None = None) -> Services:
    secret = settings.resolved_secret_key()
    db = db or Database(settings.database_url)
    keys = KeyRing(db, KeyEncryptor(secret), settings.key_retention)
    return Services(settings=settings, db=db, keys=keys, secret=secret,
                    grace_sealer=KeyEncryptor(secret, "refresh-grace"),
                    purger=Purger(db, settings.refresh_reuse_grace), cookies=Cookies(settings, secret),
                    policy=PolicyCache(db, settings))
