"""The sign-in and consent pages in a real browser (Debian's Chromium, driven by Playwright).

A real uvicorn serves the app on a free loopback port; a tiny http.server plays the
native client's loopback redirect target. Nothing is downloaded: without
/usr/bin/chromium the test is skipped, except in CI (AUTHSERVER_TEST_REQUIRE_POSTGRES=1)
where that is a failure. It runs on both databases, like every test that stores something.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from authserver.app import create_app
from authserver.db import Database
from tests.conftest import REQUIRE_PG, make_settings
from tests.live import serve
from tests.oauth_helpers import PASSWORD, RESOURCE, authorize_params, pkce_pair, seed

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
SCREENSHOT = Path("/tmp/consent.png")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def callback_server(port: int) -> Iterator[list[dict[str, list[str]]]]:
    """A loopback redirect target like a native MCP client's; records each callback's query."""
    received: list[dict[str, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/callback":
                received.append(parse_qs(parts.query, keep_blank_values=True))
            body = b"<!doctype html><title>done</title><p>You can close this window.</p>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_sign_in_and_partial_consent_in_chromium(db_url: str, db: Database) -> None:
    if not Path(CHROMIUM).exists():
        if REQUIRE_PG:
            pytest.fail(f"{CHROMIUM} is required in CI (AUTHSERVER_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")

    callback_port = free_port()
    world = seed(db)
    redirect_uri = f"http://127.0.0.1:{callback_port}/callback"  # registered as http://127.0.0.1/callback
    verifier, challenge = pkce_pair()
    params = authorize_params(world.public_id, challenge, redirect_uri=redirect_uri,
                              scope="read:calendar write:calendar", state="browser-state-42")

    with serve(lambda base: create_app(make_settings(db_url, issuer=base), db=db)) as issuer, \
            callback_server(callback_port) as received, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            problems: list[str] = []
            # Any console error counts (a CSP violation reads "Refused to ..."), the favicon's too.
            page.on("console", lambda m: problems.append(f"{m.text} {m.location}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            page.goto(f"{issuer}/authorize?{urlencode(params)}")
            assert page.get_by_role("heading", name="Sign in").is_visible()
            page.fill("#username", "alice")
            page.fill("#password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()

            allow = page.get_by_role("button", name="Allow")
            allow.wait_for()
            text = page.inner_text("main")
            assert "Desktop Agent" in text
            assert "Calendar" in text
            assert "Create, change and delete your calendar events" in text
            assert "can make changes" in text
            assert "See your calendar events" in text
            assert "runs on your own computer" in text  # loopback warning
            assert f"127.0.0.1:{callback_port}" in text
            # The session and binding cookies are HttpOnly: invisible to page script.
            assert page.evaluate("document.cookie") == ""
            # Both scopes ticked by default; the write scope comes first.
            boxes = page.locator('input[type=checkbox][name="scope"]')
            # The permissions, write first, then "Stay connected" (offline_access), all ticked.
            assert [boxes.nth(i).get_attribute("value") for i in range(boxes.count())] == [
                "write:calendar", "read:calendar", "offline_access"]
            assert all(boxes.nth(i).is_checked() for i in range(boxes.count()))
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            page.uncheck('input[name="scope"][value="write:calendar"]')
            allow.click()
            page.wait_for_url(f"{redirect_uri}?*")
            assert "You can close this window" in page.inner_text("body")

            # The consent is remembered, but any local program can present this public client's
            # id with its own loopback port: the person confirms with one click, then cancels once.
            again = {**params, "scope": "read:calendar", "state": "browser-state-43"}
            for choice, state in (("Continue", "browser-state-43"), ("Cancel", "browser-state-44")):
                page.goto(f"{issuer}/authorize?{urlencode({**again, 'state': state})}")
                page.get_by_role("button", name=choice).wait_for()
                text = page.inner_text("main")
                assert "Desktop Agent" in text and f"127.0.0.1:{callback_port}" in text
                assert "wants to continue with the access you granted" in text
                assert "Continue only if you just started it yourself" in text
                assert "See your calendar events" in text and "Create, change" not in text
                page.get_by_role("button", name=choice).click()
                page.wait_for_url(f"{redirect_uri}?*")
            # The stylesheet loaded and nothing broke under the CSP.
            assert problems == []
        finally:
            browser.close()

        assert len(received) == 3, received
        confirmed, cancelled = ({k: v[0] for k, v in r.items()} for r in received[1:])
        assert confirmed["state"] == "browser-state-43" and "code" in confirmed and confirmed["iss"] == issuer
        assert cancelled["error"] == "access_denied" and "code" not in cancelled
        assert cancelled["state"] == "browser-state-44" and cancelled["iss"] == issuer
        callback = {k: v[0] for k, v in received[0].items()}
        assert callback.keys() >= {"code", "state", "iss"}
        assert "error" not in callback
        assert callback["state"] == "browser-state-42"
        assert callback["iss"] == issuer

        response = httpx.post(f"{issuer}/token", data={
            "grant_type": "authorization_code", "code": callback["code"], "code_verifier": verifier,
            "redirect_uri": redirect_uri, "client_id": world.public_id}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["scope"] == "read:calendar"
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["scope"] == "read:calendar"
        assert claims["aud"] == RESOURCE
        assert claims["iss"] == issuer
    assert SCREENSHOT.stat().st_size > 0
