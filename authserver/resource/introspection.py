"""RFC 7662 token introspection, for when local JWT checks are not enough.

Local verification cannot see a revocation until the token expires (minutes) and
cannot read opaque tokens. Introspection asks the authorization server instead,
at the price of one round trip per request. The resource server authenticates
with ``client_secret_basic`` (RFC 6749 §2.3.1: id and secret form-encoded, then
Base64). A response counts only when it is HTTP 200 with ``"active": true`` and the
token was issued for this resource; an authentication failure or a server error
is reported as "unavailable", not as a bad token, because it is our configuration
or their outage, not the client's fault.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from authserver.resource._http import Fetcher
from authserver.resource.discovery import AuthServerMetadata
from authserver.resource.errors import AuthServerUnavailableError, InvalidTokenError


def basic_auth(client_id: str, client_secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Introspector:
    def __init__(self, fetcher: Fetcher, metadata: AuthServerMetadata, *, endpoint: str | None,
                 client_id: str, client_secret: str) -> None:
        self._fetcher = fetcher
        self._metadata = metadata
        self._endpoint = endpoint
        self._authorization = basic_auth(client_id, client_secret)

    async def introspect(self, token: str) -> dict[str, Any]:
        """The introspection response of an active token; ``InvalidTokenError`` for an inactive one."""
        endpoint = self._endpoint or await self._metadata.endpoint("introspection_endpoint")
        status, document = await self._fetcher.post_form(
            endpoint, {"token": token, "token_type_hint": "access_token"},
            {"Authorization": self._authorization}, "introspection endpoint")
        if status != 200:
            if self._endpoint is None and status not in (401, 403):  # bad credentials are not the metadata's fault
                self._metadata.forget()
            raise AuthServerUnavailableError(f"introspection endpoint answered HTTP {status}")
        if document.get("active") is not True:
            raise InvalidTokenError("token is not active")
        return document
