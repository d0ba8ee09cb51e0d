"""End to end with the official MCP Python SDK client against the calendar demo and a real authserver.

Three real HTTP servers on free loopback ports (uvicorn, each in a thread): authserver (on
SQLite and PostgreSQL), the calendar demo MCP server of ``examples/calendar_mcp`` protected by
the resource-server kit, and (for the Client ID Metadata Document test) a static file server
publishing the client's metadata document. The client is the SDK's ``OAuthClientProvider``
on an ``httpx2`` client: it discovers everything from the demo server's 401, registers (RFC
7591) or uses its metadata URL as ``client_id``, and runs authorization code + PKCE. Its
``redirect_handler`` is a headless person: a separate httpx client with its own cookie jar
that opens the authorization URL, signs in and consents through our HTML forms, and captures
the final redirect to the client's redirect URI (nothing listens there; the code, state and
``iss`` are read from the Location and handed to ``callback_handler``, which checks ``iss``
as a real client would).

The scenario: list tools and events (read:calendar); create an event, which the server refuses
with 403 ``insufficient_scope`` so the SDK steps up (consent then asks only for
write:calendar); then the access token expires and the SDK refreshes it (seen in the audit log).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from authserver.app import create_app
from authserver.db import Database
from authserver.resource import VerifiedToken
from examples.calendar_mcp.seed import seed
from examples.calendar_mcp.server import create_app as create_calendar_app
from examples.calendar_mcp.tool_scopes import ToolScopeMiddleware, called_tools
from tests.conftest import make_settings
from tests.live import serve
from tests.oauth_helpers import parse_forms, query

pytestmark = pytest.mark.anyio

USERNAME = "alice"
PASSWORD = "correct horse battery staple"
REDIRECT_URI = "http://127.0.0.1:53682/callback"  # loopback (RFC 8252): nothing needs to listen


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- servers


@dataclass
class Stack:
    issuer: str
    resource: str
    db: Database
    cimd_base: str

    def events(self, name: str) -> int:
        with self.db.engine.connect() as conn:
            count = conn.execute(text("SELECT COUNT(*) FROM audit_events WHERE event = :e"), {"e": name})
            return int(count.scalar_one())

    def events_soon(self, name: str, expected: int, timeout: float = 5.0) -> int:
        """``events`` once it reaches ``expected`` (or the timeout): some events are written in batches."""
        deadline = time.monotonic() + timeout
        while (count := self.events(name)) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return count


CIMD_PATH = "/oauth/client-metadata.json"


def _cimd_app(base: str) -> Starlette:
    """A client's own web server, publishing its metadata document at the URL it uses as client_id."""
    client_id = base + CIMD_PATH
    document = {"client_id": client_id, "client_name": "SDK e2e client (CIMD)", "redirect_uris": [REDIRECT_URI],
                "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                "token_endpoint_auth_method": "none"}

    async def endpoint(request: Any) -> JSONResponse:
        return JSONResponse(document, headers={"Cache-Control": "max-age=300"})

    return Starlette(routes=[Route(CIMD_PATH, endpoint)])


@pytest.fixture
def stack(db_url: str, db: Database) -> Iterator[Stack]:
    with serve(lambda issuer: create_app(make_settings(db_url, issuer=issuer, access_token_ttl=30,
                                                       cimd_allow_loopback_http=True), db=db)) as issuer, \
            serve(lambda base: create_calendar_app(issuer, f"{base}/mcp")) as mcp_base, \
            serve(_cimd_app) as cimd_base:
        resource = f"{mcp_base}/mcp"
        seed(db, resource, username=USERNAME, password=PASSWORD)
        yield Stack(issuer, resource, db, cimd_base)


# --------------------------------------------------------------------------- the person at the browser


@dataclass
class Round:
    """One trip through the authorization pages."""

    authorization_url: str
    signed_in: bool = False
    consent_scopes: list[str] | None = None  # the scope checkboxes shown, None when no consent page


@dataclass
class HeadlessBrowser:
    """Drives our login and consent pages like a person would; keeps its session cookie between rounds."""

    issuer: str
    rounds: list[Round] = field(default_factory=list)
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(follow_redirects=False, timeout=10))
    _result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        this = Round(authorization_url)
        self.rounds.append(this)
        response = await self.http.get(authorization_url)
        for _ in range(6):
            assert response.status_code in (302, 303), response.text
            location = urljoin(str(response.url), response.headers["location"])
            if location.startswith(REDIRECT_URI):
                params = query(location)
                self._result = AuthorizationCodeResult(code=params.get("code", ""), state=params.get("state"),
                                                       iss=params.get("iss"))
                assert "error" not in params, params
                return
            assert location.startswith(self.issuer + "/interaction/"), location
            page = await self.http.get(location)
            if page.status_code in (302, 303):
                response = page
                continue
            assert page.status_code == 200, page.text
            forms = parse_forms(page.text)
            login = next((f for f in forms if "login" in f.action), None)
            if login is not None:
                data = dict(login.fields) | {"username": USERNAME, "password": PASSWORD}
                response = await self.http.post(urljoin(location, login.action), data=data)
                this.signed_in = True
                continue
            consent = next(f for f in forms if "consent" in f.action)
            this.consent_scopes = [value for name, value, _ in consent.checkboxes
                                   if name == "scope" and value != "offline_access"]  # not "Stay connected"
            scopes = [value for name, value, checked in consent.checkboxes if name == "scope" and checked]
            response = await self.http.post(urljoin(location, consent.action),
                                            data={**dict(consent.fields), "scope": scopes, "decision": "allow"})
        raise AssertionError("the authorization pages did not end in a redirect to the client")

    async def callback_handler(self) -> AuthorizationCodeResult:
        result, self._result = self._result, None
        assert result is not None, "no authorization response captured"
        # RFC 9207: a real client refuses a response that does not come from the server it asked.
        if result.iss != self.issuer:
            raise RuntimeError(f"authorization response from {result.iss!r}, expected {self.issuer!r}")
        return result


class MemoryStorage:
    """The SDK's ``TokenStorage`` protocol, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Wire:
    """Every HTTP exchange the SDK's client made: (method, URL, status, WWW-Authenticate)."""

    seen: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    async def hook(self, response: httpx2.Response) -> None:
        self.seen.append((response.request.method, str(response.request.url), response.status_code,
                          response.headers.get("www-authenticate")))

    def statuses(self, url: str) -> list[int]:
        return [status for _, u, status, _ in self.seen if u == url]


@asynccontextmanager
async def mcp_client(stack: Stack, provider: OAuthClientProvider, wire: Wire, mode: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(auth=provider, event_hooks={"response": [wire.hook]},
                              timeout=httpx2.Timeout(15, read=30))
    async with http, Client(streamable_http_client(stack.resource, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
        expected = "2026-07-28" if mode == "auto" else None
        assert expected is None or client.session.protocol_version == expected
        yield client


def _events(result: Any) -> Any:
    assert not result.is_error, result
    return result.structured_content


async def _scenario(stack: Stack, provider: OAuthClientProvider, browser: HeadlessBrowser, storage: MemoryStorage,
                    wire: Wire, mode: str = "auto") -> None:
    async with mcp_client(stack, provider, wire, mode) as client:
        # Connecting met the 401 and ran the whole flow: one sign-in, one consent for read:calendar.
        assert len(browser.rounds) == 1 and browser.rounds[0].signed_in
        assert "read:calendar" in (browser.rounds[0].consent_scopes or [])
        assert "write:calendar" not in (browser.rounds[0].consent_scopes or [])
        assert storage.tokens is not None and "write:calendar" not in (storage.tokens.scope or "").split()
        assert wire.statuses(stack.resource)[0] == 401

        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == {"list_events", "create_event"}
        assert _events(await client.call_tool("list_events", {})) == {"result": []}

        # Step-up: 403 insufficient_scope → re-authorization for the union; consent asks only for what is new.
        created = await client.call_tool("create_event", {"title": "Standup", "start": "2030-01-07T09:00:00Z"})
        assert _events(created)["title"] == "Standup"
        challenges = [(status, header) for _, url, status, header in wire.seen if url == stack.resource
                      and status == 403]
        metadata_url = stack.resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
        assert challenges == [(403, 'Bearer error="insufficient_scope", scope="read:calendar write:calendar", '
                                    f'resource_metadata="{metadata_url}"')]
        assert len(browser.rounds) == 2
        assert not browser.rounds[1].signed_in  # the session cookie from round one
        assert "write:calendar" in (browser.rounds[1].consent_scopes or [])
        assert {"read:calendar", "write:calendar"} <= set((storage.tokens.scope or "").split())

        # Expiry: the SDK judges it by its own clock, so move that clock's verdict into the past.
        assert storage.tokens.refresh_token and storage.tokens.expires_in == 30
        refreshed_before = stack.events("token.refreshed")
        provider.context.token_expiry_time = time.time() - 1
        listed = _events(await client.call_tool("list_events", {}))
        assert [e["title"] for e in listed["result"]] == ["Standup"]
        # token.refreshed is batched (audit.buffer): written within the flush period, not with the response.
        assert stack.events_soon("token.refreshed", refreshed_before + 1) == refreshed_before + 1
        assert len(browser.rounds) == 2  # refreshed, not re-authorized
        assert provider.context.token_expiry_time and provider.context.token_expiry_time > time.time()


def check_step_up_consent(browser: HeadlessBrowser) -> None:
    """Remembered consent: the step-up page asks only for what is new, though the SDK sends prompt=consent."""
    step_up = browser.rounds[1]
    assert "consent" in query(step_up.authorization_url).get("prompt", "").split()
    assert step_up.consent_scopes == ["write:calendar"]


def _client_metadata() -> OAuthClientMetadata:
    return OAuthClientMetadata(client_name="SDK e2e client", redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
                               grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                               token_endpoint_auth_method="none")


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 (stateless), and initialize + MCP sessions
async def test_sdk_client_registers_steps_up_and_refreshes(stack: Stack, mode: str) -> None:
    browser, storage, wire = HeadlessBrowser(stack.issuer), MemoryStorage(), Wire()
    provider = OAuthClientProvider(server_url=stack.resource, client_metadata=_client_metadata(), storage=storage,
                                   redirect_handler=browser.redirect_handler,
                                   callback_handler=browser.callback_handler)
    async with browser.http:
        await _scenario(stack, provider, browser, storage, wire, mode)
    registrations = [u for method, u, status, _ in wire.seen if method == "POST" and u.endswith("/register")]
    assert registrations == [f"{stack.issuer}/register"]  # RFC 7591, once
    assert storage.client_info is not None and not storage.client_info.client_id.startswith("http")
    assert stack.events("client.registered") == 1
    check_step_up_consent(browser)


async def test_sdk_client_uses_a_client_id_metadata_document(stack: Stack) -> None:
    cimd_url = stack.cimd_base + CIMD_PATH
    browser, storage, wire = HeadlessBrowser(stack.issuer), MemoryStorage(), Wire()
    # The SDK insists on an https metadata URL when constructed (as the spec does); the document here
    # is served over loopback http, which the authorization server accepts only with
    # cimd_allow_loopback_http (a testing switch). Swap the URL in after the constructor's check.
    provider = OAuthClientProvider(server_url=stack.resource, client_metadata=_client_metadata(), storage=storage,
                                   redirect_handler=browser.redirect_handler,
                                   callback_handler=browser.callback_handler,
                                   client_metadata_url="https://client.example/oauth/client-metadata.json")
    provider.context.client_metadata_url = cimd_url
    async with browser.http:
        await _scenario(stack, provider, browser, storage, wire)
    assert not [u for method, u, _, _ in wire.seen if method == "POST" and u.endswith("/register")]
    assert storage.client_info is not None and storage.client_info.client_id == cimd_url
    assert stack.events("client.registered") == 0
    check_step_up_consent(browser)


# --------------------------------------------------------------------------- ToolScopeMiddleware alone


def test_called_tools_reads_single_messages_and_batches() -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "create_event"}}
    assert called_tools(json.dumps(call).encode()) == ["create_event"]
    assert called_tools(json.dumps([{"method": "tools/list"}, call]).encode()) == ["create_event"]
    assert called_tools(b'{"method": "tools/call", "params": {"name": 7}}') == [""]
    assert called_tools(b"not json") == called_tools(b'{"method": "tools/list"}') == []


async def test_tool_scope_middleware_gates_calls_and_replays_the_body() -> None:
    seen: list[tuple[bytes, str | None]] = []

    async def inner(request: Any) -> JSONResponse:
        token = get_access_token()
        seen.append((await request.body(), token.subject if token else None))
        return JSONResponse({"ok": True})

    resource = "http://127.0.0.1:8001/mcp"
    gate = ToolScopeMiddleware(Starlette(routes=[Route("/mcp", inner, methods=["GET", "POST"])]),
                               {"create_event": ["write:calendar"]}, resource=resource, base_scopes=["read:calendar"],
                               max_body_bytes=1000)

    async def with_token(scope: Any, receive: Any, send: Any) -> None:  # what BearerAuthMiddleware leaves
        scope.setdefault("state", {})["auth"] = VerifiedToken(
            subject="alice", client_id="c1", scopes=("read:calendar", "offline_access"), audience=resource,
            expires_at=int(time.time()) + 60, jti="j1", claims={"iss": "http://127.0.0.1:8000"})
        await gate(scope, receive, send)

    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "create_event", "arguments": {}}}
    listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_events"}})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=with_token), base_url="http://127.0.0.1:8001") as c:
        denied = await c.post("/mcp", json=call)
        batch = await c.post("/mcp", json=[json.loads(listing), call])
        allowed = await c.post("/mcp", content=listing)
        stream = await c.get("/mcp")
        huge = await c.post("/mcp", content=b" " * 1001)
    challenge = ('Bearer error="insufficient_scope", scope="read:calendar write:calendar", '
                 'resource_metadata="http://127.0.0.1:8001/.well-known/oauth-protected-resource/mcp"')
    assert (denied.status_code, denied.headers["www-authenticate"]) == (403, challenge)
    assert denied.json()["error"] == "insufficient_scope"
    assert (batch.status_code, batch.headers["www-authenticate"]) == (403, challenge)
    assert allowed.status_code == 200 and stream.status_code == 200
    assert huge.status_code == 413
    assert seen == [(listing.encode(), "alice"), (b"", "alice")]
