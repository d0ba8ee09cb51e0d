"""URI rules shared by clients, resources and registration."""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit, urlunsplit

from authserver.errors import AppError
from authserver.settings import is_loopback_host

MAX_REDIRECT_URI_LENGTH = 2048
# RFC 3986 §2: unreserved, reserved and "%" (percent-encoding); nothing else appears in a URI.
URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


def check_redirect_uri(uri: str) -> str:
    """A redirect URI must be https, or http on a loopback host (RFC 8252 §7.3); no fragment.

    The one check behind registration (RFC 7591), metadata documents, the CLI and the console.
    Refused besides: C0 and C1 control characters, userinfo (``https://a@b/``: RFC 3986 §3.2.1
    deprecates it, and a person reading
    ``https://trusted.example@evil.example/`` sees the wrong host) and backslashes (browsers read
    ``\\`` as ``/`` in http(s) URLs, Python's parser does not, so the two disagree on the host), lone
    UTF-16 surrogates (not text: PostgreSQL refuses them) and URIs over 2048 characters.
    """
    if not uri or len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise AppError("malformed redirect URI (empty or over 2048 characters)")
    if any(ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or 0xD800 <= ord(ch) <= 0xDFFF for ch in uri):
        raise AppError(f"malformed redirect URI {uri!r}")
    if "\\" in uri:
        raise AppError(f"redirect URI {uri!r} must not contain a backslash")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise AppError(f"malformed redirect URI {uri!r}") from exc
    if parts.fragment or "#" in uri:
        raise AppError(f"redirect URI {uri!r} must not contain a fragment")
    if "@" in parts.netloc:
        raise AppError(f"redirect URI {uri!r} must not contain userinfo (user@host)")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return uri
    raise AppError(f"redirect URI {uri!r} must be https, or http on a loopback host")


def redirect_host(uri: str) -> str:
    """What the consent page shows of a redirect URI: host and port only (never userinfo, path or query)."""
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host


def identifies_client(uri: str) -> bool:
    """Whether delivering a code to ``uri`` proves who the client is (RFC 8252 §8.6).

    An https redirect on a non-loopback host reaches only the party that controls that host. A
    loopback redirect (http or https) reaches any program on the person's computer, so for a
    public client it proves nothing: its ``client_id`` is only a name anyone can present.
    """
    try:
        parts = urlsplit(uri)
        hostname = parts.hostname
    except ValueError:
        return False
    return parts.scheme == "https" and bool(hostname) and not is_loopback_host(hostname)


def is_loopback_uri(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        hostname = parts.hostname
    except ValueError:
        return False
    return parts.scheme == "http" and is_loopback_host(hostname)


@functools.lru_cache(maxsize=1024)
def canonical_resource_uri(uri: str) -> str:
    """RFC 8707 §2: an absolute URI without fragment; scheme and host lower-cased.

    Only the characters a URI may hold (RFC 3986 §2: no space, backslash, control or non-ASCII
    character): ``urlsplit`` silently drops tabs and newlines, which would make two strings one
    resource, and a backslash is a path separator to some parsers and not to others.
    Memoised: every token request names the same few resources (an error is not cached)."""
    uri = uri.strip()
    if not URI_CHARACTERS.fullmatch(uri):
        raise AppError(f"malformed resource URI {uri!r}")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise AppError(f"malformed resource URI {uri!r}") from exc
    if parts.fragment or "#" in uri:
        raise AppError(f"resource URI {uri!r} must not contain a fragment")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise AppError(f"resource URI {uri!r} must be an absolute http(s) URI")
    if "@" in parts.netloc:
        # Userinfo names no other resource (RFC 9110 §4.2.4 forbids it in http(s) URIs); dropping
        # it would let "https://evil@mcp.example.com/" pass for the resource it only seems to be.
        raise AppError(f"resource URI {uri!r} must not contain userinfo")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise AppError(f"resource URI {uri!r} must be https (http only on a loopback host)")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))
