"""Small, defensive HTTP helpers shared by discovery, JWKS and introspection.

Everything the kit fetches comes from the authorization server, but a resource
server must not hang or run out of memory because that server (or something
pretending to be it) misbehaves: responses are size-capped, time-limited, never
follow redirects, and must be JSON objects. Plain ``http`` is refused except on
loopback hosts, so keys are never fetched over a network an attacker can rewrite.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from authserver.resource.errors import AuthServerUnavailableError

DEFAULT_TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 256 * 1024
USER_AGENT = "authserver-resource-kit"
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:[,=]|$)", re.IGNORECASE)


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """``url`` if it is absolute ``https`` (or ``http`` on a loopback host), else ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL: {url!r}")
    if parts.fragment:
        raise ValueError(f"{what} must not have a fragment: {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{what} must use https (plain http is allowed only on loopback): {url!r}")
    return url


def max_age(headers: Mapping[str, str]) -> int | None:
    """Seconds from ``Cache-Control: max-age``; 0 for ``no-store``/``no-cache``; None when absent."""
    value = headers.get("cache-control", "")
    if _NO_CACHE.search(value):
        return 0
    match = _MAX_AGE.search(value)
    return int(match.group(1)) if match else None


async def _send(client: httpx.AsyncClient, request: httpx.Request, what: str,
                max_bytes: int) -> tuple[httpx.Response, bytes]:
    try:
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise AuthServerUnavailableError(f"{what} response is too large")
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        raise AuthServerUnavailableError(f"{what} is unreachable") from exc
    return response, bytes(body)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise AuthServerUnavailableError(f"{what} did not return JSON") from exc
    if not isinstance(document, dict):
        raise AuthServerUnavailableError(f"{what} did not return a JSON object")
    return document


class Fetcher:
    """Sends requests with the caller's ``httpx.AsyncClient``, or a short-lived one per request.

    A client made per request is never bound to an event loop that has since closed,
    which matters for a verifier built at import time; fetches are rare (cached keys,
    rate-limited refetches), so the missing connection reuse costs nothing.
    """

    def __init__(self, client: httpx.AsyncClient | None, timeout: float = DEFAULT_TIMEOUT,
                 max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._client = client
        self._timeout = timeout
        self._max_bytes = max_bytes

    async def _request(self, build: httpx.Request, what: str) -> tuple[httpx.Response, bytes]:
        if self._client is not None:
            return await _send(self._client, build, what, self._max_bytes)
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            return await _send(client, build, what, self._max_bytes)

    def _build(self, method: str, url: str, *, data: dict[str, str] | None = None,
               json_body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Request:
        return httpx.Request(
            method, url, data=data, json=json_body,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})},
            extensions={"timeout": httpx.Timeout(self._timeout).as_dict()},
        )

    async def get_json(self, url: str, what: str) -> tuple[dict[str, Any], int | None]:
        """The JSON object at ``url`` (200 only) and its ``Cache-Control`` max-age."""
        response, body = await self._request(self._build("GET", url), what)
        if response.status_code != 200:
            raise AuthServerUnavailableError(f"{what} answered HTTP {response.status_code}")
        return _json_object(body, what), max_age(response.headers)

    async def post_form(self, url: str, form: dict[str, str], headers: dict[str, str],
                        what: str) -> tuple[int, dict[str, Any]]:
        """POST a form; the status and JSON object answered."""
        response, body = await self._request(self._build("POST", url, data=form, headers=headers), what)
        if response.status_code != 200:
            return response.status_code, {}
        return response.status_code, _json_object(body, what)

    async def post_json(self, url: str, document: dict[str, Any], headers: dict[str, str], what: str) -> int:
        """POST a JSON object; the status answered (the body is read, bounded, and discarded)."""
        response, _ = await self._request(self._build("POST", url, json_body=document, headers=headers), what)
        return response.status_code
