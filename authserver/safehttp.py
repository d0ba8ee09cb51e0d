"""Outbound HTTP to URLs that someone else chose: the SSRF guard shared by every fetcher.

Used for Client ID Metadata Documents (``clients.metadata_document``) and for the console's
check of a resource server (``catalog.check``). The rules:

* SSRF: only https; the host is resolved once and refused if any address is not public (private,
  loopback, link-local, cloud metadata, multicast, reserved, or those hidden inside IPv4-mapped,
  6to4, NAT64 and IPv4-compatible IPv6 forms).
* DNS rebinding: the connection goes to an address we vetted, never to a second lookup, while TLS
  still sends SNI for, and verifies the certificate against, the URL's host name. The pinning sits
  in the socket layer (an httpcore network backend), so URL, Host header, SNI and certificate
  checks stay the standard ones. httpcore is used directly rather than through httpx because httpx
  reads proxy settings from the environment, and a proxy would resolve the name again.
* No redirects (a 3xx could point anywhere, including inside our network): a 3xx is an answer.
* Size and time: the body is capped while streaming (Content-Length is not trusted) and the whole
  exchange, DNS included, has one deadline, so a slow-drip server cannot hold a worker.

``allow_loopback_http`` is a development and testing switch: it permits ``http://`` on a loopback
host and loopback addresses; it never permits private networks.

Errors carry a ``public`` sentence built from the caller's ``subject`` ("the client's metadata
document") and a log-only ``detail`` (which may name internal addresses: showing it would make
us a DNS oracle for the intranet).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore

from authserver.settings import is_loopback_host

# getaddrinfo has no timeout and blocks a thread; cap how many lookups may hang at once.
_DNS_SLOTS = threading.BoundedSemaphore(16)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class FetchError(Exception):
    """The URL could not be fetched or its answer is not acceptable; ``public`` says why in words."""

    def __init__(self, public: str, *, detail: str | None = None) -> None:
        super().__init__(public)
        self.public = public
        self.detail = detail


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def parse_target(url: str, *, allow_loopback_http: bool = False, max_length: int = 2048) -> Target | None:
    """Where ``url`` would connect to, or None when it is not a URL we fetch: https (or loopback
    http with the switch), a host, no userinfo, printable ASCII only, no backslash or fragment."""
    if not isinstance(url, str) or not 0 < len(url) <= max_length:
        return None
    # No whitespace, controls or IDN look-alikes; no backslash, which some URL parsers treat as a
    # path separator and others as part of the host.
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in url) or "\\" in url or "#" in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or "@" in parts.netloc:
        return None
    loopback_http = parts.scheme == "http" and allow_loopback_http and is_loopback_host(host)
    if parts.scheme != "https" and not loopback_http:
        return None
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


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
    """Whether we may connect to ``address`` for a URL someone else chose."""
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


def system_resolver(host: str, port: int) -> list[str]:
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

    thread = threading.Thread(target=run, name="guarded-dns", daemon=True)
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
            raise error("the fetch ran out of time")
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
                raise httpcore.ConnectTimeout("the fetch ran out of time")
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
        raise httpcore.ConnectError("unix sockets are never used")

def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "client_id" members would be read differently by different parsers.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Headers:
    """Case-insensitive view of httpcore's raw header list; repeated headers joined with commas."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in raw:
            self._values.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1").strip())

    def get(self, name: str) -> str:
        return ", ".join(self._values.get(name, []))


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate members, no NaN or Infinity. Raises ValueError."""
    return json.loads(body.decode("utf-8"), object_pairs_hook=reject_duplicate_keys, parse_constant=reject_constant)


@dataclass(frozen=True)
class Answer:
    """What a server said: status, headers and (unless not asked for) the capped body."""

    url: str
    status: int
    headers: Headers
    body: bytes


class GuardedHTTP:
    """GET (or another method) to a URL someone else chose, behind the guards above. Thread-safe."""

    def __init__(self, *, allow_loopback_http: bool = False, max_bytes: int = 64 * 1024, timeout: float = 5.0,
                 resolver: Resolver | None = None, ssl_context: ssl.SSLContext | None = None,
                 user_agent: bytes = b"authserver") -> None:
        self.allow_loopback_http = allow_loopback_http
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._resolver = resolver or system_resolver
        # Built once, on the first fetch: loading the CA bundle per fetch costs more than a small
        # fetch's parsing, and a server that never fetches need not hold it (nor load httpx).
        self._given_ssl_context = ssl_context
        self._ssl_lock = threading.Lock()
        self._user_agent = user_agent

    def _ssl_context(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._given_ssl_context is None:
                import httpx  # its default context: certifi's CA bundle, as httpx clients use

                self._given_ssl_context = httpx.create_ssl_context()
            return self._given_ssl_context

    def target(self, url: str) -> Target | None:
        return parse_target(url, allow_loopback_http=self.allow_loopback_http)

    def request(self, url: str, subject: str, *, method: str = "GET", accept: bytes = b"application/json",
                read_body: bool = True, check: Callable[[int, Headers], None] | None = None) -> Answer:
        """One exchange, any status (a 3xx is returned, never followed). ``check`` sees status and
        headers before the body is read; ``read_body=False`` closes the stream unread (a server that
        answers with an endless event stream cannot hold us)."""
        target = self.target(url)
        if target is None:
            raise FetchError(f"{subject} URL is not an https URL we may fetch")
        deadline = time.monotonic() + self.timeout
        addresses = self._vetted_addresses(target, deadline, subject)
        pool = httpcore.ConnectionPool(ssl_context=self._ssl_context(), max_connections=1,
                                       network_backend=_PinnedBackend(addresses, deadline))
        timeouts = {"connect": self.timeout, "read": self.timeout, "write": self.timeout, "pool": self.timeout}
        headers = [(b"Accept", accept), (b"User-Agent", self._user_agent)]
        try:
            with pool, pool.stream(method, url.encode("ascii"), headers=headers,
                                   extensions={"timeout": timeouts}) as response:
                head = Headers(response.headers)
                if check is not None:
                    check(response.status, head)
                body = self._read_body(response, subject) if read_body else b""
        except httpcore.TimeoutException as exc:
            raise FetchError(f"fetching {subject} timed out", detail=str(exc)) from exc
        except httpcore.ConnectError as exc:
            raise FetchError(f"{subject} could not be fetched: the server did not accept the connection",
                             detail=f"{type(exc).__name__}: {exc}") from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
            raise FetchError(f"{subject} could not be fetched", detail=f"{type(exc).__name__}: {exc}") from exc
        return Answer(url, response.status, head, body)

    def get_json(self, url: str, subject: str) -> tuple[Any, Headers]:
        """A JSON document served with 200 as ``application/json`` (UTF-8, uncompressed, within the cap)."""
        answer = self.request(url, subject, check=lambda status, head: self._check_json_response(status, head,
                                                                                                 subject))
        try:
            return parse_json(answer.body), answer.headers
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise FetchError(f"{subject} is not valid JSON", detail=str(exc)) from exc

    def too_large(self, subject: str) -> str:
        return f"{subject} is larger than {self.max_bytes} bytes"

    def _vetted_addresses(self, target: Target, deadline: float, subject: str) -> list[str]:
        unreachable = f"{subject} host could not be resolved to a public address"
        try:
            resolved = _resolve_with_deadline(self._resolver, target.host, target.port, deadline)
        except (OSError, UnicodeError, ValueError) as exc:
            raise FetchError(unreachable, detail=f"lookup of {target.host} failed: {exc}") from exc
        addresses: list[str] = []
        for text in resolved:
            try:
                address = ipaddress.ip_address(text)
            except ValueError as exc:
                raise FetchError(unreachable, detail=f"{target.host} gave {text!r}") from exc
            if target.scheme == "http":
                allowed = address.is_loopback  # the switch is for local development only
            else:
                allowed = address_allowed(address, allow_loopback=self.allow_loopback_http)
            if not allowed:
                # One bad address refuses them all: which one the connection would use is not ours to choose.
                raise FetchError(unreachable, detail=f"{target.host} resolves to {text}")
            addresses.append(str(address))
        if not addresses:
            raise FetchError(unreachable, detail=f"{target.host} resolved to nothing")
        return addresses

    def _check_json_response(self, status: int, head: Headers, subject: str) -> None:
        if 300 <= status < 400:
            raise FetchError(f"{subject} URL redirects; redirects are not followed",
                             detail=f"status {status} to {head.get('location')!r}")
        if status != 200:
            raise FetchError(f"{subject} URL answered HTTP {status}")
        media_type, *params = (part.strip().lower() for part in head.get("content-type").split(";"))
        if media_type != "application/json":
            raise FetchError(f"{subject} is not served as application/json",
                             detail=f"content-type {head.get('content-type')!r}")
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
                raise FetchError(f"{subject} must be UTF-8 JSON")
        # We never ask for compression, and decompressing would make the size cap meaningless.
        if head.get("content-encoding").lower() not in ("", "identity"):
            raise FetchError(f"{subject} must not be compressed")
        length = head.get("content-length")
        if length.isdigit() and int(length) > self.max_bytes:
            raise FetchError(self.too_large(subject), detail=f"content-length {length}")

    def _read_body(self, response: httpcore.Response, subject: str) -> bytes:
        body = bytearray()
        for chunk in response.iter_stream():
            body += chunk
            if len(body) > self.max_bytes:
                raise FetchError(self.too_large(subject))
        return bytes(body)
