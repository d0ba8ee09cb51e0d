"""End to end with the official MCP TypeScript SDK client (``@modelcontextprotocol/sdk``, on Node).

The same servers as ``test_mcp_sdk_e2e.py`` (authserver on SQLite and PostgreSQL, the calendar
demo of ``examples/calendar_mcp``), but the client is ``tests/interop_ts/client.mjs``: the SDK's
``StreamableHTTPClientTransport`` with an in-memory ``OAuthClientProvider``, run with ``node`` as
a subprocess. It prints one JSON line per step; when it prints the authorization URL, the
headless person of ``test_mcp_sdk_e2e.py`` signs in and consents through our HTML, and the final
redirect's Location is written to the script's stdin (the script checks ``state`` and ``iss``,
calls ``transport.finishAuth(code)`` and reconnects). Then it lists the tools and calls
``list_events``.

The SDK's exact version is pinned in ``tests/interop_ts/package-lock.json``; ``make test``
installs it (``npm ci``), and so does this test when ``node_modules`` is missing. Without
``node``/``npm`` the test is skipped, except in CI (AUTHSERVER_TEST_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authserver.app import create_app
from authserver.db import Database
from examples.calendar_mcp.seed import seed
from examples.calendar_mcp.server import create_app as create_calendar_app
from tests.conftest import make_settings
from tests.live import serve
from tests.oauth_helpers import query
from tests.test_mcp_sdk_e2e import PASSWORD, REDIRECT_URI, USERNAME, HeadlessBrowser, Stack

pytestmark = pytest.mark.anyio

CLIENT_DIR = Path(__file__).parent / "interop_ts"
CLIENT = CLIENT_DIR / "client.mjs"
REQUIRED = os.environ.get("AUTHSERVER_TEST_REQUIRE_POSTGRES") == "1"  # CI: a missing toolchain is a failure
STEP_TIMEOUT = 20  # seconds for any one line from the script


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (required in CI: AUTHSERVER_TEST_REQUIRE_POSTGRES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with the pinned SDK installed beside the client script."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed")
    assert node is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        _unavailable(f"node {version} is too old for @modelcontextprotocol/sdk (needs 18 or later)")
    if not (CLIENT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("npm is not installed (needed once: npm ci --prefix tests/interop_ts)")
        assert npm is not None
        done = subprocess.run([npm, "ci", "--prefix", str(CLIENT_DIR), "--no-audit", "--no-fund"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            _unavailable(f"npm ci --prefix tests/interop_ts failed: {done.stderr[-2000:]}")
    return node


@pytest.fixture
def ts_stack(db_url: str, db: Database) -> Iterator[Stack]:
    with serve(lambda issuer: create_app(make_settings(db_url, issuer=issuer), db=db)) as issuer, \
            serve(lambda base: create_calendar_app(issuer, f"{base}/mcp")) as mcp_base:
        resource = f"{mcp_base}/mcp"
        seed(db, resource, username=USERNAME, password=PASSWORD)
        yield Stack(issuer, resource, db, cimd_base="")


class Script:
    """The node process: its JSON lines as they come, and its stdin."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.steps: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), STEP_TIMEOUT)
        if not line:
            raise AssertionError(f"the script ended early: {self.steps}\nstderr: {await self.stderr()}")
        step: dict[str, Any] = json.loads(line)
        self.steps.append(step)
        return step

    async def until(self, name: str) -> dict[str, Any]:
        while (step := await self.next())["step"] != name:
            assert step["step"] != "error", f"{step}\nall steps: {self.steps}\nstderr: {await self.stderr()}"
        return step

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        try:
            return (await asyncio.wait_for(self.process.stderr.read(), 2)).decode(errors="replace")
        except TimeoutError:
            return "(no stderr)"

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["step"] == name]

    def http(self, method: str, url: str) -> list[dict[str, Any]]:
        return [s for s in self.named("http") if s["method"] == method and s["url"] == url]


async def test_typescript_sdk_client_discovers_registers_and_calls_tools(node: str, ts_stack: Stack) -> None:
    stack = ts_stack
    locations: list[str] = []

    async def capture(response: httpx.Response) -> None:  # the exact Location the browser would follow
        location = response.headers.get("location", "")
        if location.startswith(REDIRECT_URI):
            locations.append(location)

    http = httpx.AsyncClient(follow_redirects=False, timeout=10, event_hooks={"response": [capture]})
    browser = HeadlessBrowser(stack.issuer, http=http)
    process = await asyncio.create_subprocess_exec(
        node, str(CLIENT), stack.resource, stack.issuer, cwd=CLIENT_DIR,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    script = Script(process)
    try:
        async with http:
            authorize = await script.until("authorize")
            await browser.redirect_handler(authorize["url"])
            assert len(locations) == 1, locations
            await script.send(locations[0])
            await script.until("done")
        assert await asyncio.wait_for(process.wait(), STEP_TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    # Discovery from the 401: the challenge names the resource metadata, which names us.
    metadata_url = stack.resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    first = script.named("http")[0]
    assert (first["method"], first["url"], first["status"]) == ("POST", stack.resource, 401)
    assert f'resource_metadata="{metadata_url}"' in first["www_authenticate"]
    assert [s["status"] for s in script.http("GET", metadata_url)][:1] == [200]
    as_metadata = [s for s in script.named("http") if s["method"] == "GET" and s["url"].startswith(stack.issuer)
                   and "/.well-known/" in s["url"]]
    assert as_metadata and as_metadata[-1]["status"] == 200, script.named("http")

    # RFC 7591 dynamic registration, once, as a public client.
    registrations = script.http("POST", f"{stack.issuer}/register")
    assert [s["status"] for s in registrations] == [201], registrations
    assert registrations[0]["json"]["token_endpoint_auth_method"] == "none"
    assert registrations[0]["json"]["redirect_uris"] == [REDIRECT_URI]
    [registered] = script.named("registered")
    assert registered["token_endpoint_auth_method"] == "none" and not registered["has_secret"]
    assert stack.events("client.registered") == 1

    # The authorization request: PKCE S256, the resource indicator, the registered client.
    params = query(authorize["url"])
    assert authorize["url"].startswith(f"{stack.issuer}/authorize?")
    assert params["response_type"] == "code" and params["client_id"] == registered["client_id"]
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["resource"] == stack.resource
    assert params["redirect_uri"] == REDIRECT_URI and params.get("state")
    assert "read:calendar" in params.get("scope", "").split()
    assert len(browser.rounds) == 1 and browser.rounds[0].signed_in
    assert "read:calendar" in (browser.rounds[0].consent_scopes or [])
    assert script.named("iss_checked") == [{"step": "iss_checked", "iss": stack.issuer}]

    # The token call: authorization_code with the verifier and the resource, accepted.
    tokens = script.http("POST", f"{stack.issuer}/token")
    assert [s["status"] for s in tokens] == [200], tokens
    form = tokens[0]["form"]
    assert form["grant_type"] == "authorization_code" and {"code", "code_verifier"} <= set(form["keys"])
    assert form["resource"] == stack.resource and form["client_id"] == registered["client_id"]
    [saved] = script.named("tokens")
    assert saved["has_access_token"] and saved["token_type"].lower() == "bearer"
    assert "read:calendar" in (saved["scope"] or "").split()
    # A refresh token although this SDK never asks for offline_access: "Stay connected" was left
    # ticked on the consent page (see "Refresh tokens" in the README).
    assert saved["has_refresh_token"], saved

    # Reconnected with the token; the tools are there and list_events answers.
    assert [s["attempt"] for s in script.named("connected")] == [2]
    assert script.named("list_tools")[0]["names"] == ["create_event", "list_events"]
    [call] = script.named("call_tool")
    assert not call["is_error"] and call["structured_content"] == {"result": []}, call
    assert all(s["status"] < 400 for s in script.named("http")[1:] if s["url"] == stack.resource), script.steps
    assert not script.named("invalidate")
