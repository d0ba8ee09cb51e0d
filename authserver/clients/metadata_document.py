"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP authorization spec).

A client whose ``client_id`` is an ``https://`` URL with a path publishes its metadata at that URL,
and we fetch it. That makes every authorization request an instruction to make an outbound request
to a URL chosen by an anonymous party, so the fetch is fenced in:

* SSRF, DNS rebinding, redirects, size and time: the shared guard in ``authserver.safehttp``
  (public addresses only, the connection pinned to the vetted address, no redirects followed, the
  body capped while streaming, one deadline for the whole exchange).
* Host patterns: the operator's allow and deny lists (``HostPolicy``; the registration policy page
  stores them, the environment gives the defaults), matched case-insensitively with shell-style
  wildcards (``*.example.com``), checked before the cache answers so a new deny takes effect at once.
* Fetch storms: results, failures included, are cached, and concurrent requests for one URL share
  one fetch. A page making browsers (or a script) send us many different URLs is limited per
  address in ``oauth.registry`` (AUTHSERVER_CIMD_FETCH_RATE_LIMIT fetches per window).

``allow_loopback_http`` is a development and testing switch: it permits ``http://`` on a loopback
host and loopback addresses; it never permits private networks.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import ssl
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from authserver import observe
from authserver.clients.jwks import JwksError, check_public_jwks
from authserver.errors import AppError
from authserver.safehttp import FetchError, GuardedHTTP, Resolver, Target, address_allowed, parse_target
from authserver.settings import is_loopback_host
from authserver.text import has_lone_surrogate
from authserver.uris import check_redirect_uri

__all__ = ["ClientMetadata", "HostPolicy", "MetadataDocumentError", "MetadataFetcher", "address_allowed",
           "host_pattern_error", "is_metadata_document_url"]

log = logging.getLogger("authserver.clients.metadata_document")

MAX_CLIENT_ID_LENGTH = 2048
MAX_CLIENT_NAME_LENGTH = 200
ALLOWED_AUTH_METHODS = frozenset({"none", "private_key_jwt"})
ALLOWED_GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})
# Keeps the cache from growing without bound when someone cycles through URLs.
MAX_CACHE_ENTRIES = 10_000
_USER_AGENT = b"authserver (client-id-metadata-document fetcher)"
SUBJECT = "the client's metadata document"
# Host name characters and fnmatch's wildcards; no scheme, port, path or spaces (a pattern with
# any of those could never match a host name, which would make a deny list silently useless).
_HOST_PATTERN_RE = re.compile(r"^[a-z0-9*?\[\]!._-]{1,253}$")


@dataclass(frozen=True)
class ClientMetadata:
    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str  # "none" or "private_key_jwt"
    grant_types: tuple[str, ...]
    scope: str | None
    client_uri: str | None
    logo_uri: str | None
    jwks_uri: str | None
    expires_at: float  # unix time until which the cached document is fresh
    dpop_bound_access_tokens: bool = False  # RFC 9449 §5.2: every token request needs a proof
    # Inline keys for private_key_jwt when the document has no jwks_uri.
    jwks: dict[str, Any] | None = field(default=None, hash=False, compare=False)


class MetadataDocumentError(FetchError):
    """The document could not be fetched or is not acceptable.

    ``public`` is safe to show a person or send as ``error_description``; ``detail`` is for logs
    only (it may name internal addresses, which would make us a DNS oracle for the intranet).
    """

    def copy(self) -> MetadataDocumentError:
        # A cached failure is re-raised in many threads; each gets its own traceback.
        return MetadataDocumentError(self.public, detail=self.detail)


def _parse_client_id_url(client_id: str, allow_loopback_http: bool) -> Target | None:
    target = parse_target(client_id, allow_loopback_http=allow_loopback_http, max_length=MAX_CLIENT_ID_LENGTH)
    if target is None:
        return None
    path = urlsplit(client_id).path
    if path in ("", "/"):
        return None
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        return None
    return target


def host_pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a host pattern, or None when it can (the matcher of ``HostPolicy``)."""
    if not _HOST_PATTERN_RE.match(pattern.lower()):
        return (f"{pattern!r} is not a host name pattern: use a host name, optionally with * or ? "
                "(e.g. *.example.com), without scheme, port or path")
    return None


@dataclass(frozen=True)
class HostPolicy:
    """Which hosts may serve metadata documents: deny wins; ``allowed`` None means any host."""

    allowed: tuple[str, ...] | None = None
    denied: tuple[str, ...] = ()

    @classmethod
    def of(cls, allowed: Iterable[str] | None, denied: Iterable[str] | None) -> HostPolicy:
        return cls(tuple(p.lower() for p in allowed) if allowed is not None else None,
                   tuple(p.lower() for p in denied or ()))

    def accepts(self, host: str) -> bool:
        host = host.lower()
        if any(fnmatch.fnmatchcase(host, pattern) for pattern in self.denied):
            return False
        return self.allowed is None or any(fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed)


def is_metadata_document_url(client_id: str, *, allow_loopback_http: bool = False) -> bool:
    """Whether ``client_id`` has the shape of a Client ID Metadata Document URL (draft §3):
    https, a host, a path other than ``/``, no fragment, no userinfo, no dot segments."""
    return _parse_client_id_url(client_id, allow_loopback_http) is not None



def _cache_ttl(cache_control: str, *, min_ttl: int, max_ttl: int, default_ttl: int) -> int:
    directives: dict[str, str] = {}
    for item in cache_control.split(","):
        name, _, value = item.strip().partition("=")
        if name:
            directives.setdefault(name.strip().lower(), value.strip().strip('"'))
    # no-store/no-cache still get min_ttl: re-fetching on every request would let a client make
    # us hammer its (or someone's) server, one fetch per authorization attempt.
    if "no-store" in directives or "no-cache" in directives:
        return min_ttl
    max_age = directives.get("max-age")
    if max_age is not None and max_age.isdigit():
        return max(min_ttl, min(max_ttl, int(max_age)))
    return default_ttl


@dataclass
class _Entry:
    expires_at: float
    metadata: ClientMetadata | None = None
    error: MetadataDocumentError | None = None


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    entry: _Entry | None = None


class MetadataFetcher:
    """Fetches, validates and caches Client ID Metadata Documents. Thread-safe."""

    def __init__(self, *, allow_loopback_http: bool = False, max_bytes: int = 5 * 1024, timeout: float = 5.0,
                 min_ttl: int = 60, max_ttl: int = 24 * 3600, default_ttl: int = 3600,
                 allowed_hosts: list[str] | None = None, denied_hosts: list[str] | None = None,
                 host_policy: Callable[[], HostPolicy] | None = None,
                 resolver: Resolver | None = None,
                 negative_ttl: int = 30, ssl_context: ssl.SSLContext | None = None,
                 max_concurrent_fetches: int = 8) -> None:
        """``host_policy``, when given, is asked on every fetch (the operator's current patterns) and
        replaces ``allowed_hosts``/``denied_hosts``."""
        self.allow_loopback_http = allow_loopback_http
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.min_ttl = min_ttl
        self.max_ttl = max(max_ttl, min_ttl)
        self.default_ttl = max(min_ttl, min(self.max_ttl, default_ttl))
        self.negative_ttl = negative_ttl
        fixed = HostPolicy.of(allowed_hosts, denied_hosts)
        self._host_policy = host_policy or (lambda: fixed)
        self._http = GuardedHTTP(allow_loopback_http=allow_loopback_http, max_bytes=max_bytes, timeout=timeout,
                                 resolver=resolver, ssl_context=ssl_context, user_agent=_USER_AGENT)
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._flights: dict[str, _Flight] = {}
        # Fetches run in request threads: a bound keeps slow document servers from taking them all.
        self._fetch_slots = threading.BoundedSemaphore(max_concurrent_fetches)

    # -- public -------------------------------------------------------------------------------

    def fetch(self, client_id: str, *, network: bool = True) -> ClientMetadata:
        """The validated document. With ``network=False`` only the cache answers (a stale entry
        included): callers inside a database transaction never wait on the network."""
        target = _parse_client_id_url(client_id, self.allow_loopback_http)
        if target is None:
            raise MetadataDocumentError("the client_id is not a valid client metadata document URL")
        self._check_host_policy(target.host)
        with self._lock:
            entry = self._cache.get(client_id)
            if entry is not None and (entry.expires_at > time.time() or not network):
                return self._unwrap(entry)
            if not network:
                raise MetadataDocumentError("the client's metadata document is not available yet; try again")
            flight = self._flights.get(client_id)
            leader = flight is None
            if flight is None:
                flight = self._flights[client_id] = _Flight()
        if not leader:
            # Someone is fetching this URL right now; their fetch is bounded by the deadline.
            if not flight.done.wait(self.timeout + 1.0) or flight.entry is None:
                raise MetadataDocumentError("the client's metadata document could not be fetched in time")
            return self._unwrap(flight.entry)
        if not self._fetch_slots.acquire(blocking=False):
            with self._lock:
                self._flights.pop(client_id, None)
            flight.done.set()  # waiters see no entry and fail; nothing is cached
            raise MetadataDocumentError("too many client metadata documents are being fetched; try again")
        entry = _Entry(expires_at=time.time() + self.negative_ttl,
                       error=MetadataDocumentError("the client's metadata document could not be fetched"))
        try:
            entry = self._fetch_entry(client_id, target)
        finally:
            self._fetch_slots.release()
            with self._lock:
                self._store(client_id, entry)
                self._flights.pop(client_id, None)
            flight.entry = entry
            flight.done.set()
        return self._unwrap(entry)

    def would_fetch(self, client_id: str) -> bool:
        """Whether ``fetch`` would go to the network now (no fresh entry and no fetch under way)."""
        with self._lock:
            entry = self._cache.get(client_id)
            fresh = entry is not None and entry.expires_at > time.time()
            return not fresh and client_id not in self._flights

    def forget(self, client_id: str) -> None:
        """Drop a cached document or failure (e.g. after an operator fixed something)."""
        with self._lock:
            self._cache.pop(client_id, None)

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _unwrap(entry: _Entry) -> ClientMetadata:
        if entry.error is not None:
            raise entry.error.copy()
        assert entry.metadata is not None
        return entry.metadata

    def _store(self, client_id: str, entry: _Entry) -> None:
        if client_id not in self._cache and len(self._cache) >= MAX_CACHE_ENTRIES:
            now = time.time()
            for key in [k for k, e in self._cache.items() if e.expires_at <= now]:
                del self._cache[key]
            while len(self._cache) >= MAX_CACHE_ENTRIES:
                del self._cache[next(iter(self._cache))]  # oldest insertion first
        self._cache.pop(client_id, None)
        self._cache[client_id] = entry

    def _check_host_policy(self, host: str) -> None:
        if not self._host_policy().accepts(host):
            raise MetadataDocumentError(f"client metadata documents from {host.lower()} are not accepted here")

    def _download(self, client_id: str) -> tuple[Any, int]:
        try:
            document, head = self._http.get_json(client_id, SUBJECT)
        except FetchError as exc:
            raise MetadataDocumentError(exc.public, detail=exc.detail) from exc
        ttl = _cache_ttl(head.get("cache-control"), min_ttl=self.min_ttl, max_ttl=self.max_ttl,
                         default_ttl=self.default_ttl)
        return document, ttl

    def _fetch_entry(self, client_id: str, target: Target) -> _Entry:
        try:
            document, ttl = self._download(client_id)
            expires_at = time.time() + ttl
            entry = _Entry(expires_at=expires_at, metadata=self._validate(client_id, document, expires_at))
            observe.count("documents", "ok")
            return entry
        except MetadataDocumentError as exc:
            observe.count("documents", "failed")
            log.info("client metadata document %s refused: %s (%s)", client_id, exc.public, exc.detail or "-")
            return _Entry(expires_at=time.time() + self.negative_ttl, error=exc)


    def _validate(self, client_id: str, doc: Any, expires_at: float) -> ClientMetadata:
        if not isinstance(doc, dict):
            raise MetadataDocumentError("the client's metadata document must be a JSON object")
        if has_lone_surrogate(doc):
            raise MetadataDocumentError("the client's metadata document contains a lone UTF-16 surrogate "
                                        "(not text)")
        # Simple string comparison (draft §4.1): anything looser lets one URL speak for another.
        if doc.get("client_id") != client_id:
            raise MetadataDocumentError("the metadata document's client_id does not match the URL it was fetched from")
        # A public document cannot hold a shared secret.
        for member in ("client_secret", "client_secret_expires_at"):
            if member in doc:
                raise MetadataDocumentError(f"a client metadata document must not contain {member}")

        name = doc.get("client_name")
        if not isinstance(name, str) or not name.strip():
            raise MetadataDocumentError("the client's metadata document must have a client_name")
        if len(name) > MAX_CLIENT_NAME_LENGTH:
            raise MetadataDocumentError(f"client_name is longer than {MAX_CLIENT_NAME_LENGTH} characters")
        # The name is shown on the consent page; line breaks and control characters could fake its layout.
        # Formatting characters (Cf: bidirectional overrides, zero-width joiners) could disguise it.
        if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
            raise MetadataDocumentError("client_name must not contain control characters or formatting characters")

        redirect_uris = doc.get("redirect_uris")
        if not isinstance(redirect_uris, list) or not redirect_uris:
            raise MetadataDocumentError("the client's metadata document must list redirect_uris")
        for uri in redirect_uris:
            if not isinstance(uri, str):
                raise MetadataDocumentError("redirect_uris must be strings")
            try:
                check_redirect_uri(uri)
            except AppError as exc:
                raise MetadataDocumentError(str(exc)) from exc

        auth_method = self._optional_str(doc, "token_endpoint_auth_method") or "none"
        if auth_method.startswith("client_secret"):
            raise MetadataDocumentError(
                f"token_endpoint_auth_method {auth_method!r} needs a shared secret, which a public document "
                "cannot carry; use none or private_key_jwt")
        if auth_method not in ALLOWED_AUTH_METHODS:
            raise MetadataDocumentError(f"token_endpoint_auth_method {auth_method!r} is not supported")

        grant_types = self._string_list(doc, "grant_types") or ["authorization_code"]  # RFC 7591 §2 default
        unsupported = [g for g in grant_types if g not in ALLOWED_GRANT_TYPES]
        if unsupported:
            raise MetadataDocumentError(f"grant type {unsupported[0]!r} is not allowed for a metadata document client")
        if "authorization_code" not in grant_types:
            raise MetadataDocumentError("grant_types must include authorization_code")
        response_types = self._string_list(doc, "response_types")
        if response_types is not None and response_types != ["code"]:
            raise MetadataDocumentError('response_types must be ["code"]')

        jwks_uri = self._optional_url(doc, "jwks_uri")
        jwks = doc.get("jwks")
        if jwks is not None and (not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list)):
            raise MetadataDocumentError("jwks must be a JSON Web Key Set object")
        if jwks is not None and jwks_uri is None:
            try:
                check_public_jwks(jwks)  # public signing keys only, bounded (a private key here is leaked)
            except JwksError as exc:
                raise MetadataDocumentError(str(exc)) from None
        if jwks is not None and jwks_uri is not None:
            raise MetadataDocumentError("a client metadata document must not have both jwks and jwks_uri")
        if auth_method == "private_key_jwt" and jwks is None and jwks_uri is None:
            raise MetadataDocumentError("private_key_jwt needs jwks_uri or jwks")

        dpop_bound = doc.get("dpop_bound_access_tokens", False)
        if not isinstance(dpop_bound, bool):
            raise MetadataDocumentError("dpop_bound_access_tokens must be true or false")

        return ClientMetadata(
            client_id=client_id,
            client_name=name.strip(),
            redirect_uris=tuple(dict.fromkeys(redirect_uris)),
            token_endpoint_auth_method=auth_method,
            grant_types=tuple(dict.fromkeys(grant_types)),
            scope=self._optional_str(doc, "scope"),
            client_uri=self._optional_url(doc, "client_uri"),
            logo_uri=self._optional_url(doc, "logo_uri"),
            jwks_uri=jwks_uri,
            expires_at=expires_at,
            dpop_bound_access_tokens=dpop_bound,
            jwks=jwks,
        )

    @staticmethod
    def _optional_str(doc: dict[str, Any], member: str) -> str | None:
        value = doc.get(member)
        if value is not None and not isinstance(value, str):
            raise MetadataDocumentError(f"{member} must be a string")
        if value is not None and any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
            raise MetadataDocumentError(f"{member} must not contain control or formatting characters")
        return value

    @staticmethod
    def _string_list(doc: dict[str, Any], member: str) -> list[str] | None:
        value = doc.get(member)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
            raise MetadataDocumentError(f"{member} must be a non-empty list of strings")
        return value

    def _optional_url(self, doc: dict[str, Any], member: str) -> str | None:
        # These end up as links and images on the consent page: a javascript: or http: URL there
        # is script injection or mixed content.
        value = self._optional_str(doc, member)
        if value is None:
            return None
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        ok = parts is not None and bool(parts.hostname) and not any(ch.isspace() for ch in value) and (
            "@" not in parts.netloc and "\\" not in value) and (
            parts.scheme == "https"
            or (self.allow_loopback_http and parts.scheme == "http" and is_loopback_host(parts.hostname)))
        if not ok:
            raise MetadataDocumentError(f"{member} must be an https URL")
        return value

