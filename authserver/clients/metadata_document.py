"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP authorization spec).

A client whose ``client_id`` is an ``https://`` URL with a path publishes its metadata at that URL,
and we fetch it. That makes every authorization request an instruction to make an outbound request
to a URL chosen by an anonymous party, so the fetch is fenced in:

* SSRF: only https; the host is resolved once and refused if any address is not public (private,
  loopback, link-local, cloud metadata, multicast, reserved, or those hidden inside IPv4-mapped,
  6to4, NAT64 and IPv4-compatible IPv6 forms).
* DNS rebinding: the connection goes to an address we vetted, never to a second lookup, while TLS
  still sends SNI for, and verifies the certificate against, the URL's host name. The pinning sits
  in the socket layer (an httpcore network backend), so URL, Host header, SNI and certificate
  checks stay the standard ones. httpcore is used directly rather than through httpx because httpx
  reads proxy settings from the environment, and a proxy would resolve the name again.
* No redirects (a 3xx could point anywhere, including inside our network).
* Size and time: the body is capped while streaming (Content-Length is not trusted) and the whole
  exchange, DNS included, has one deadline, so a slow-drip server cannot hold a worker.
* Fetch storms: results, failures included, are cached, and concurrent requests for one URL share
  one fetch.

``allow_loopback_http`` is a development and testing switch: it permits ``http://`` on a loopback
host and loopback addresses; it never permits private networks.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpcore
import httpx

from authserver.errors import AppError
from authserver.settings import is_loopback_host
from authserver.uris import check_redirect_uri

log = logging.getLogger("authserver.clients.metadata_document")

MAX_CLIENT_ID_LENGTH = 2048
MAX_CLIENT_NAME_LENGTH = 200
ALLOWED_AUTH_METHODS = frozenset({"none", "private_key_jwt"})
ALLOWED_GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})
# Keeps the cache from growing without bound when someone cycles through URLs.
MAX_CACHE_ENTRIES = 10_000
# getaddrinfo has no timeout and blocks a thread; cap how many lookups may hang at once.
_DNS_SLOTS = threading.BoundedSemaphore(16)
_USER_AGENT = b"authserver (client-id-metadata-document fetcher)"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    # Inline keys for private_key_jwt when the document has no jwks_uri.
    jwks: dict[str, Any] | None = field(default=None, hash=False, compare=False)


class MetadataDocumentError(Exception):
    """The document could not be fetched or is not acceptable.

    ``public`` is safe to show a person or send as ``error_description``; ``detail`` is for logs
    only (it may name internal addresses, which would make us a DNS oracle for the intranet).
    """

    def __init__(self, public: str, *, detail: str | None = None) -> None:
        super().__init__(public)
        self.public = public
        self.detail = detail

    def copy(self) -> MetadataDocumentError:
        # A cached failure is re-raised in many threads; each gets its own traceback.
        return MetadataDocumentError(self.public, detail=self.detail)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int


def _parse_client_id_url(client_id: str, allow_loopback_http: bool) -> _Target | None:
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH:
        return None
    # Printable ASCII only: no whitespace, controls or IDN look-alikes; no backslash, which some
    # URL parsers treat as a path separator and others as part of the host.
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in client_id) or "\\" in client_id or "#" in client_id:
        return None
    try:
        parts = urlsplit(client_id)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or "@" in parts.netloc:
        return None
    loopback_http = parts.scheme == "http" and allow_loopback_http and is_loopback_host(host)
    if parts.scheme != "https" and not loopback_http:
        return None
    if parts.path in ("", "/"):
        return None
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        return None
    return _Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def is_metadata_document_url(client_id: str, *, allow_loopback_http: bool = False) -> bool:
    """Whether ``client_id`` has the shape of a Client ID Metadata Document URL (draft §3):
    https, a host, a path other than ``/``, no fragment, no userinfo, no dot segments."""
    return _parse_client_id_url(client_id, allow_loopback_http) is not None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that a translation form of IPv6 delivers to, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if address in _NAT64 or address in _NAT64_LOCAL or (packed >> 32 == 0 and packed > 1):
        # NAT64 (RFC 6052, RFC 8215) and deprecated IPv4-compatible ::a.b.c.d: the low 32 bits.
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _is_public(address: Address) -> bool:
    # is_global is the base, but on Python 3.11 it is True for multicast and for the IPv6 forms
    # that carry a private IPv4 address, so both are checked explicitly.
    return (address.is_global and not address.is_multicast and not address.is_reserved
            and not address.is_unspecified and not address.is_loopback and not address.is_link_local
            and not address.is_private and not getattr(address, "is_site_local", False))


def address_allowed(address: Address, *, allow_loopback: bool = False) -> bool:
    """Whether we may connect to ``address`` for a metadata document."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id or address in _TEREDO:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # Judged by where the packets really go. No loopback exception here even with the
            # switch: only plain 127/8 and ::1 count as loopback.
            return _is_public(embedded)
    if allow_loopback and address.is_loopback:
        return True
    return _is_public(address)


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _resolve_with_deadline(resolver: Callable[[str, int], list[str]], host: str, port: int,
                           deadline: float) -> list[str]:
    """Run the resolver in a daemon thread so a hung lookup cannot outlast our deadline."""
    if not _DNS_SLOTS.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise TimeoutError("too many host name lookups in progress")
    result: list[list[str] | BaseException] = []

    def run() -> None:
        try:
            result.append(list(resolver(host, port)))
        except BaseException as exc:  # handed to the waiting thread
            result.append(exc)
        finally:
            _DNS_SLOTS.release()

    thread = threading.Thread(target=run, name="cimd-dns", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not result:
        raise TimeoutError(f"looking up {host} timed out")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class _DeadlineStream(httpcore.NetworkStream):
    """Caps every socket operation at the time left, so the deadline covers the whole exchange."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the metadata document fetch ran out of time")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the vetted addresses whatever host name httpcore asks for: no second lookup."""

    def __init__(self, addresses: list[str], deadline: float) -> None:
        self._addresses = addresses
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        failure: Exception = httpcore.ConnectError("no address to connect to")
        for address in self._addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the metadata document fetch ran out of time")
            try:
                stream = self._inner.connect_tcp(address, port, min(left, timeout or left), local_address,
                                                 socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for metadata documents")


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


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "client_id" members would be read differently by different parsers.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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
                 resolver: Callable[[str, int], list[str]] | None = None,
                 negative_ttl: int = 30, ssl_context: ssl.SSLContext | None = None,
                 max_concurrent_fetches: int = 8) -> None:
        self.allow_loopback_http = allow_loopback_http
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.min_ttl = min_ttl
        self.max_ttl = max(max_ttl, min_ttl)
        self.default_ttl = max(min_ttl, min(self.max_ttl, default_ttl))
        self.negative_ttl = negative_ttl
        self.allowed_hosts = [p.lower() for p in allowed_hosts] if allowed_hosts is not None else None
        self.denied_hosts = [p.lower() for p in denied_hosts or []]
        self._resolver = resolver or _system_resolver
        # Built once: loading the CA bundle per fetch costs more than the fetch's parsing.
        self._ssl_context = ssl_context or httpx.create_ssl_context()
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
        host = host.lower()
        if any(fnmatch.fnmatchcase(host, pattern) for pattern in self.denied_hosts):
            raise MetadataDocumentError(f"client metadata documents from {host} are not accepted here")
        if self.allowed_hosts is not None and not any(
                fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed_hosts):
            raise MetadataDocumentError(f"client metadata documents from {host} are not accepted here")

    def _fetch_entry(self, client_id: str, target: _Target) -> _Entry:
        try:
            document, ttl = self._download(client_id, target)
            expires_at = time.time() + ttl
            return _Entry(expires_at=expires_at, metadata=self._validate(client_id, document, expires_at))
        except MetadataDocumentError as exc:
            log.info("client metadata document %s refused: %s (%s)", client_id, exc.public, exc.detail or "-")
            return _Entry(expires_at=time.time() + self.negative_ttl, error=exc)

    def _vetted_addresses(self, target: _Target, deadline: float) -> list[str]:
        unreachable = "the client's metadata document host could not be resolved to a public address"
        try:
            resolved = _resolve_with_deadline(self._resolver, target.host, target.port, deadline)
        except (OSError, UnicodeError, ValueError) as exc:
            raise MetadataDocumentError(unreachable, detail=f"lookup of {target.host} failed: {exc}") from exc
        addresses: list[str] = []
        for text in resolved:
            try:
                address = ipaddress.ip_address(text)
            except ValueError as exc:
                raise MetadataDocumentError(unreachable, detail=f"{target.host} gave {text!r}") from exc
            if target.scheme == "http":
                allowed = address.is_loopback  # the switch is for local development only
            else:
                allowed = address_allowed(address, allow_loopback=self.allow_loopback_http)
            if not allowed:
                # One bad address refuses them all: which one the connection would use is not ours to choose.
                raise MetadataDocumentError(unreachable, detail=f"{target.host} resolves to {text}")
            addresses.append(str(address))
        if not addresses:
            raise MetadataDocumentError(unreachable, detail=f"{target.host} resolved to nothing")
        return addresses

    def _download(self, client_id: str, target: _Target) -> tuple[Any, int]:
        deadline = time.monotonic() + self.timeout
        addresses = self._vetted_addresses(target, deadline)
        unavailable = "the client's metadata document could not be fetched"
        pool = httpcore.ConnectionPool(ssl_context=self._ssl_context, max_connections=1,
                                       network_backend=_PinnedBackend(addresses, deadline))
        timeouts = {"connect": self.timeout, "read": self.timeout, "write": self.timeout, "pool": self.timeout}
        headers = [(b"Accept", b"application/json"), (b"User-Agent", _USER_AGENT)]
        try:
            with pool, pool.stream("GET", client_id.encode("ascii"), headers=headers,
                                   extensions={"timeout": timeouts}) as response:
                head = _Headers(response.headers)
                self._check_response(response.status, head)
                body = self._read_body(response)
        except httpcore.TimeoutException as exc:
            raise MetadataDocumentError("fetching the client's metadata document timed out",
                                        detail=str(exc)) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
            raise MetadataDocumentError(unavailable, detail=f"{type(exc).__name__}: {exc}") from exc
        try:
            document = json.loads(body.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys,
                                  parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MetadataDocumentError("the client's metadata document is not valid JSON", detail=str(exc)) from exc
        ttl = _cache_ttl(head.get("cache-control"), min_ttl=self.min_ttl, max_ttl=self.max_ttl,
                         default_ttl=self.default_ttl)
        return document, ttl

    def _check_response(self, status: int, head: _Headers) -> None:
        if 300 <= status < 400:
            raise MetadataDocumentError("the client's metadata document URL redirects; redirects are not followed",
                                        detail=f"status {status} to {head.get('location')!r}")
        if status != 200:
            raise MetadataDocumentError(f"the client's metadata document URL answered HTTP {status}")
        media_type, *params = (part.strip().lower() for part in head.get("content-type").split(";"))
        if media_type != "application/json":
            raise MetadataDocumentError("the client's metadata document is not served as application/json",
                                        detail=f"content-type {head.get('content-type')!r}")
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
                raise MetadataDocumentError("the client's metadata document must be UTF-8 JSON")
        # We never ask for compression, and decompressing would make the size cap meaningless.
        if head.get("content-encoding").lower() not in ("", "identity"):
            raise MetadataDocumentError("the client's metadata document must not be compressed")
        length = head.get("content-length")
        if length.isdigit() and int(length) > self.max_bytes:
            raise MetadataDocumentError(self._too_large(), detail=f"content-length {length}")

    def _read_body(self, response: httpcore.Response) -> bytes:
        body = bytearray()
        for chunk in response.iter_stream():
            body += chunk
            if len(body) > self.max_bytes:
                raise MetadataDocumentError(self._too_large())
        return bytes(body)

    def _too_large(self) -> str:
        return f"the client's metadata document is larger than {self.max_bytes} bytes"

    # -- validation ---------------------------------------------------------------------------

    def _validate(self, client_id: str, doc: Any, expires_at: float) -> ClientMetadata:
        if not isinstance(doc, dict):
            raise MetadataDocumentError("the client's metadata document must be a JSON object")
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
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            raise MetadataDocumentError("client_name must not contain control characters")

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
        if jwks is not None and jwks_uri is not None:
            raise MetadataDocumentError("a client metadata document must not have both jwks and jwks_uri")
        if auth_method == "private_key_jwt" and jwks is None and jwks_uri is None:
            raise MetadataDocumentError("private_key_jwt needs jwks_uri or jwks")

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
            jwks=jwks,
        )

    @staticmethod
    def _optional_str(doc: dict[str, Any], member: str) -> str | None:
        value = doc.get(member)
        if value is not None and not isinstance(value, str):
            raise MetadataDocumentError(f"{member} must be a string")
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
            parts.scheme == "https"
            or (self.allow_loopback_http and parts.scheme == "http" and is_loopback_host(parts.hostname)))
        if not ok:
            raise MetadataDocumentError(f"{member} must be an https URL")
        return value


class _Headers:
    """Case-insensitive view of httpcore's raw header list; repeated headers joined with commas."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in raw:
            self._values.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1").strip())

    def get(self, name: str) -> str:
        return ", ".join(self._values.get(name, []))
