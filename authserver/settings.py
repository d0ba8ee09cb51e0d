"""Configuration from ``AUTHSERVER_*`` environment variables.

Nothing here runs at import time: ``load_settings()`` is called by the CLI and by
``create_app_from_env``, so tests can build apps on many databases side by side.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url

log = logging.getLogger("authserver.settings")

SECRET_FILE_NAME = "authserver.secret"
DATABASE_FILE_NAME = "authserver.db"
SUPPORTED_DRIVERS = {"sqlite": ("pysqlite",), "postgresql": ("psycopg",)}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says why."""


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_home(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the default SQLite database and the generated secret key live when ``AUTHSERVER_HOME``
    is unset: the XDG data directory (``$XDG_DATA_HOME/authserver``, else
    ``~/.local/share/authserver``), never the current directory, so running a command from
    another directory finds the same data instead of silently starting an empty database."""
    xdg = environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "authserver"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHSERVER_", extra="ignore")

    issuer: str = "http://127.0.0.1:8000"
    # The data directory: the default SQLite database and the generated secret key (see default_home).
    home: Path = Field(default_factory=default_home)
    # Empty: the SQLite file authserver.db in `home`.
    database_url: str = ""
    secret_key: str | None = Field(default=None, repr=False)

    access_token_ttl: int = Field(default=600, ge=30, le=86400)
    code_ttl: int = Field(default=60, ge=5, le=600)
    authorization_request_ttl: int = Field(default=600, ge=60, le=3600)
    # Unfinished, unexpired authorization requests (see interaction.flow.start): per browser (beyond
    # it the oldest is dropped, its tab then says "unknown request") and per client address (IPv4 address or
    # IPv6 /64; beyond it /authorize answers 429). Counted in the shared database, so across nodes.
    pending_requests_per_browser: int = Field(default=20, ge=1, le=1000)
    pending_requests_per_ip: int = Field(default=200, ge=1)
    # Every process deletes expired rows (codes, requests, sessions, tokens) about this often
    # (seconds, ±50 % jitter), besides after token requests and `authserver db purge`.
    purge_interval: float = Field(default=300.0, ge=1, le=86400)
    session_ttl: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    refresh_idle_ttl: int = Field(default=14 * 86400, ge=60)
    refresh_absolute_ttl: int = Field(default=90 * 86400, ge=60)
    refresh_reuse_grace: int = Field(default=10, ge=0, le=300)
    # A retired signing key stays in the JWKS this long so tokens it signed keep verifying.
    key_retention: int = Field(default=86400, ge=60)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Dynamic client registration (RFC 7591): open (MCP interoperability), token (initial access
    # token required) or off.
    registration: Literal["open", "token", "off"] = "open"
    registration_initial_access_token: str | None = Field(default=None, repr=False)
    # Registrations per address (IPv6: per /64) per window; 0 = unlimited. See limits.
    registration_rate_limit: int = Field(default=20, ge=0, le=100_000)
    registration_rate_window: int = Field(default=3600, ge=1, le=86400)
    dynamic_client_ttl: int = Field(default=86400, ge=60)  # unused registrations expire
    # Client ID Metadata Documents (an https URL as client_id).
    cimd_enabled: bool = True
    cimd_allowed_hosts: list[str] = Field(default_factory=list)
    cimd_denied_hosts: list[str] = Field(default_factory=list)
    # How stale the registration policy saved in the console may be on a node (seconds, at most 5;
    # 0 reads it on every request). See policy.cache.
    policy_cache_seconds: float = Field(default=5.0, ge=0, le=5)
    # How stale the hot paths' reads may be on a node (seconds, at most 5; 0 reads on every
    # request): clients (a disabled client or rotated secret), resources, and whether an
    # introspected access token was revoked. Changes made on the same node apply at once.
    cache_seconds: float = Field(default=1.0, ge=0, le=5)
    # Audit events of stateless work (client_credentials tokens) are written in batches, at
    # most this many seconds after they happen, and on shutdown.
    audit_flush_seconds: float = Field(default=0.5, gt=0, le=10)
    # argon2id computations (password checks and hashes) at once in this process; unset: one per
    # CPU it may use. Each holds 19 MiB; sign-ins beyond it wait, holding no database transaction.
    argon2_concurrency: int | None = Field(default=None, ge=1, le=64)
    # Shared abuse limits (see authserver.limits): counted in the database every node shares, or in
    # Redis when this is set (redis://host:6379/0, rediss://…, unix://…).
    redis_url: str | None = Field(default=None, repr=False)
    redis_prefix: str = Field(default="authserver:", min_length=1, max_length=64)
    # Token requests per client per window (every grant); 0 = unlimited. Counted per process and
    # added to the shared store every limits_sync_seconds (the overshoot bound is in limits.shared).
    # Self-registered clients (RFC 7591, metadata documents: anyone can become one) have a budget
    # by default; clients the operator registered are the operator's own and have none unless set
    # (a busy machine client may well need thousands a second).
    token_rate_limit: int = Field(default=0, ge=0, le=1_000_000)
    self_registered_token_rate_limit: int = Field(default=1200, ge=0, le=1_000_000)
    token_rate_window: int = Field(default=60, ge=1, le=3600)
    limits_sync_seconds: float = Field(default=0.5, ge=0.05, le=5)
    # Client ID Metadata Document fetches (cache misses) caused per address per window; 0 = unlimited.
    cimd_fetch_rate_limit: int = Field(default=30, ge=0, le=100_000)
    cimd_fetch_rate_window: int = Field(default=60, ge=1, le=3600)
    # Sign-in throttling (interaction.signin): failures of one typed username from one address,
    # and of one typed username from anywhere, before back-off; failures from one address before
    # it is refused altogether; how long failures are remembered after the latest; the first wait
    # (doubling with each further failure) and the longest (the lock).
    signin_failure_limit: int = Field(default=5, ge=1, le=1000)
    signin_account_failure_limit: int = Field(default=10, ge=1, le=1000)
    signin_address_failure_limit: int = Field(default=100, ge=1, le=100_000)
    signin_failure_window: int = Field(default=3600, ge=1, le=7 * 86400)
    signin_address_window: int = Field(default=900, ge=1, le=86400)
    signin_backoff_seconds: float = Field(default=30, ge=0.01, le=3600)
    signin_lock_seconds: float = Field(default=900, ge=0.01, le=86400)
    # Who must have a second factor (TOTP, see authserver.mfa): nobody, people with the admin role,
    # or everyone. Someone who must and has none is sent to set one up right after the password.
    require_second_factor: Literal["none", "admins", "everyone"] = "none"
    # Testing only: fetch metadata documents from loopback http servers. Refused with an https issuer.
    cimd_allow_loopback_http: bool = False
    log_level: str = "info"
    # Observability (authserver.observe, authserver.logconfig): log lines as text (development) or
    # one JSON object per line; /metrics on, off, or auto (on with a token or a loopback http issuer);
    # the bearer token /metrics then requires; audit events older than this many days are deleted by
    # the purge timer (0: kept forever).
    log_format: Literal["text", "json"] = "text"
    metrics: Literal["auto", "on", "off"] = "auto"
    metrics_token: str | None = Field(default=None, repr=False, min_length=16)
    audit_retention_days: int = Field(default=0, ge=0, le=36500)
    # DPoP (RFC 9449, see authserver.dpop). A proof's iat may be at most this many seconds old,
    # and at most dpop_clock_skew seconds in the future.
    dpop_proof_max_age: int = Field(default=60, ge=10, le=300)
    dpop_clock_skew: int = Field(default=5, ge=0, le=60)
    # Require the server nonce (§8) in every token-endpoint proof; off by default (see authserver.dpop).
    dpop_nonce_required: bool = False
    # A nonce is valid for the time bucket it was made in and the next one.
    dpop_nonce_seconds: int = Field(default=300, ge=30, le=3600)
    # Refuse token requests of public clients that carry no DPoP proof.
    dpop_required_for_public_clients: bool = False
    # Peers whose X-Forwarded-For is believed (CIDR blocks, e.g. ["10.0.0.0/8"]); empty: nobody's.
    # See net.client_address.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Addresses the console (/admin) answers (CIDR blocks); empty: any. Others get 403.
    admin_allowed_ips: list[str] = Field(default_factory=list)
    # Web origins (exactly "https://app.example", no path) whose pages may call /register
    # cross-origin (CORS). Empty by default: MCP clients are not browsers, and open CORS would let
    # any page register clients from its visitors' addresses.
    registration_cors_origins: list[str] = Field(default_factory=list)
    # Who runs this server, in the header of every page (sign-in, consent, errors, account,
    # console) and in its title. Plain text (escaped where shown), one line.
    display_name: str = Field(default="authserver", min_length=1, max_length=80)
    # An optional logo beside the name (see ``_logo_is_safe``): a file under our static files, an
    # https:// image (its origin is then added to the pages' CSP img-src) or a data:image URI.
    logo_url: str | None = Field(default=None, max_length=64 * 1024)

    @field_validator("display_name")
    @classmethod
    def _display_name_is_one_line(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        # Control, format (bidi overrides, zero-width), separator and surrogate characters.
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in value):
            raise ValueError("must be one line of printable text (no control or direction-changing characters)")
        return value

    @field_validator("logo_url")
    @classmethod
    def _logo_is_safe(cls, value: str | None) -> str | None:
        """Where the pages' ``<img>`` may load the logo from, without loosening their CSP for anything else.

        * ``/static/NAME`` (or ``static/NAME``): a file under ``templates/static``, served by us, so
          ``img-src 'self'`` covers it and no visitor's browser talks to anyone else. Stored as
          ``static/NAME``; the pages put it under the issuer's path.
        * ``https://host/path``: that one origin is added to ``img-src`` (``logo_origin``) and
          nothing else; images cannot run script, and ``Referrer-Policy: no-referrer`` keeps the
          page's address from the logo's host, which still sees each visitor's address and time.
        * ``data:image/png;base64,…`` (png, jpeg, gif, webp or svg+xml): inline, already allowed
          by ``img-src data:``; an SVG shown through ``<img>`` runs no script.

        Anything else (``http:``, ``javascript:``, userinfo, a path outside the static files) is
        refused at start-up rather than shown broken or blocked on every page.
        """
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.startswith("data:"):
            if not re.fullmatch(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/]+={0,2}", value):
                raise ValueError("a data: logo must be data:image/(png|jpeg|gif|webp|svg+xml);base64,…")
            return value
        if value.startswith("https://"):
            parts = urlsplit(value)
            try:
                parts.port  # noqa: B018 - raises on a malformed port
            except ValueError:
                raise ValueError("not a valid https URL") from None
            if (not re.fullmatch(r"[A-Za-z0-9\-._~:/?\[\]@!$&()*+,;=%]+", value) or parts.username
                    or parts.password or not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", parts.hostname or "")):
                raise ValueError("an https logo URL needs a plain DNS host (punycode for IDNs), no userinfo, "
                                 "quotes, spaces or fragment")
            return value
        relative = value.removeprefix("/")
        if relative.startswith("static/"):
            static = (Path(__file__).resolve().parent.parent / "templates" / "static").resolve()
            target = (static / relative.removeprefix("static/")).resolve()
            if static not in target.parents or not target.is_file() or re.search(r"[^A-Za-z0-9._/-]", relative):
                raise ValueError(f"{value!r} is no file under the static files ({static})")
            return relative
        raise ValueError("the logo must be /static/NAME (a file of ours), an https:// URL or a data:image URI")

    @field_validator("issuer")
    @classmethod
    def _issuer_is_valid(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("issuer must be an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("issuer must not have a query or fragment (RFC 8414 §2)")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("a plain http issuer is only allowed on a loopback host; use https")
        return value.rstrip("/") if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}"

    @field_validator("home")
    @classmethod
    def _home_is_absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str) -> str:
        if not value.strip():
            return ""
        examples = "sqlite:///path/to/authserver.db or postgresql+psycopg://user:password@host:5432/db"
        try:
            url = make_url(value)
            backend, driver = url.get_backend_name(), url.get_driver_name()
        except Exception:  # SQLAlchemy raises ArgumentError (or ValueError) for anything that is no URL
            raise ValueError(f"not a database URL (e.g. {examples})") from None
        if backend not in SUPPORTED_DRIVERS:
            raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql ({examples})")
        # The default driver of a bare postgresql:// is psycopg (SQLAlchemy 2.1); the others (async
        # ones, psycopg2, sqlcipher) are neither installed nor tested with authserver.
        if driver not in SUPPORTED_DRIVERS[backend]:
            raise ValueError(f"unsupported driver {driver!r} for {backend}: use {examples}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_redis(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("not a Redis URL (e.g. redis://127.0.0.1:6379/0, rediss://…, unix:///path)")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level_is_known(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown log level {value!r} (one of: {', '.join(LOG_LEVELS)})")
        return level

    @field_validator("trusted_proxies", "admin_allowed_ips")
    @classmethod
    def _trusted_proxies_are_networks(cls, value: list[str]) -> list[str]:
        from authserver.net import parse_networks

        return [str(network) for network in parse_networks(value)]

    @field_validator("registration_cors_origins")
    @classmethod
    def _cors_origins_are_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for origin in value:
            parts = urlsplit(origin.strip())
            ok = parts.scheme in ("https", "http") and bool(parts.hostname) and not parts.username \
                and parts.path == "" and not parts.query and not parts.fragment and origin.strip() != "*"
            if not ok:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], e.g. https://app.example)")
            origins.append(f"{parts.scheme}://{parts.netloc}".lower())
        return origins

    @model_validator(mode="after")
    def _database_defaults_to_home(self) -> Settings:
        if not self.database_url:
            self.database_url = self.default_database_url
        return self

    @model_validator(mode="after")
    def _policies_are_consistent(self) -> Settings:
        if self.cimd_allow_loopback_http and self.is_https:
            raise ValueError("AUTHSERVER_CIMD_ALLOW_LOOPBACK_HTTP is a testing switch; refused with an https issuer")
        if self.registration == "token" and not self.registration_initial_access_token:
            raise ValueError("AUTHSERVER_REGISTRATION=token needs AUTHSERVER_REGISTRATION_INITIAL_ACCESS_TOKEN")
        if self.signin_lock_seconds < self.signin_backoff_seconds:
            raise ValueError("AUTHSERVER_SIGNIN_LOCK_SECONDS must be at least AUTHSERVER_SIGNIN_BACKOFF_SECONDS")
        return self

    @property
    def is_https(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def issuer_path(self) -> str:
        """The issuer's path without trailing slash ('' for a host-only issuer)."""
        return urlsplit(self.issuer).path.rstrip("/")

    @property
    def logo_origin(self) -> str | None:
        """The origin the pages' CSP must allow images from: an https logo's, else None."""
        if not self.logo_url or not self.logo_url.startswith("https://"):
            return None
        parts = urlsplit(self.logo_url)
        return f"https://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    def logo_src(self) -> str | None:
        """The logo as the pages' ``<img src>``: a static file under the issuer's path."""
        if self.logo_url and self.logo_url.startswith("static/"):
            return f"{self.issuer_path}/{self.logo_url}"
        return self.logo_url

    def endpoint(self, path: str) -> str:
        return f"{self.issuer}{path}"

    @property
    def default_database_url(self) -> str:
        return f"sqlite:///{self.home / DATABASE_FILE_NAME}"

    @property
    def uses_default_database(self) -> bool:
        return self.database_url == self.default_database_url

    def database_location(self) -> str:
        """The database, as ``init`` tells the operator: a file path, or the URL without its password."""
        path = self.sqlite_path()
        return str(path) if path else make_url(self.database_url).render_as_string(hide_password=True)

    def sqlite_path(self) -> Path | None:
        url = make_url(self.database_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database)

    def resolved_secret_key(self) -> str:
        """The secret that encrypts signing keys and signs cookies.

        Development convenience: when unset on a loopback http issuer, one is generated
        once into a 0600 file beside the SQLite database (in ``home`` with PostgreSQL).
        With an https issuer that
        fallback is refused, because a production secret must be set deliberately.
        """
        if self.secret_key:
            if self.is_https and len(self.secret_key) < 32:
                raise ConfigError("AUTHSERVER_SECRET_KEY must be at least 32 characters with an https issuer")
            return self.secret_key
        if self.is_https:
            raise ConfigError(
                "AUTHSERVER_SECRET_KEY is required with an https issuer "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return _development_secret(self.secret_file())

    def secret_file(self) -> Path:
        db = self.sqlite_path()
        return (db.parent if db else self.home) / SECRET_FILE_NAME


def _development_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once must not write two different secrets.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    log.warning("generated a development secret key in %s (set AUTHSERVER_SECRET_KEY in production)", path)
    return value


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from exc
    except SettingsError as exc:
        # A list setting whose value is not JSON fails before validation, naming only the field.
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"AUTHSERVER_{match.group(1).upper()}" if match else "a setting"
        raise ConfigError(f'{name}: not valid JSON (a list is written like ["a.example", "b.example"])') from None


def _one_line(exc: ValidationError) -> str:
    """The CLI's error contract is one line; name the variable rather than the field."""
    messages = []
    for error in exc.errors():
        field = "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        messages.append(f"AUTHSERVER_{field}: {message}" if field else message)
    return "; ".join(messages)
