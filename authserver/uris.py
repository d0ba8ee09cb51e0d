"""URI rules shared by clients, resources and registration."""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit, urlunsplit

from authserver.errors import AppError
from authserver.settings import is_loopback_host

# RFC 3986 §2: unreserved, reserved and "%" (percent-encoding); nothing else appears in a URI.
URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


def check_redirect_uri(uri: str) -> str:
    """A redirect URI must be https, or http on a loopback host (RFC 8252 §7.3); no fragment."""
    if not uri or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
        raise AppError(f"malformed redirect URI {uri!r}")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise AppError(f"malformed redirect URI {uri!r}") from exc
    if parts.fragment or "#" in uri:
        raise AppError(f"redirect URI {uri!r} must not contain a fragment")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return uri
    raise AppError(f"redirect URI {uri!r} must be https, or http on a loopback host")


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
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise AppError(f"resource URI {uri!r} must be https (http only on a loopback host)")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))
