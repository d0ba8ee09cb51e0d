"""The console and the account page in a real browser (Debian's Chromium, driven by Playwright).

An operator signs in, creates a scope, a resource (MCP server) and a client and copies its
secret; a person authorizes that client through the real sign-in and consent pages; the
operator finds it in the audit log and on the client's page; the person disconnects the app
on /account and the client's next refresh fails; the consent page also reads in Korean; the home
page, an error page and signing out and in again. Every page shows the operator's name and logo
(loaded under the CSP) and links the favicon. No page may log a console error or a CSP violation,
nor fail to load anything it asks for. Runs on both databases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from authserver.app import create_app
from authserver.db import Database
from authserver.users import repository as users
from tests.conftest import REQUIRE_PG, make_settings
from tests.live import serve
from tests.oauth_helpers import PASSWORD, pkce_pair
from tests.test_browser_consent import CHROMIUM, CHROMIUM_ARGS, callback_server, free_port

pytestmark = pytest.mark.browser

RESOURCE = "https://notes.example.com/mcp"
DISPLAY_NAME = "Example Health"
LOGO = "/static/favicon.svg"  # any file under templates/static


def watch(page: Any, problems: list[str], error_pages: frozenset[str] = frozenset()) -> Any:
    """Every console error (a CSP violation reads "Refused to ..."), script error, failed request
    and error answer to anything a page loads (its logo, favicon, style sheet) is a problem; only
    the documents in ``error_pages`` are error pages on purpose (Chromium logs their status)."""
    page.set_default_timeout(15_000)
    page.on("console", lambda m: problems.append(f"{m.text} {m.location}")
            if m.type == "error" and m.location.get("url") not in error_pages else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    # ERR_ABORTED is Chromium cancelling what a page still loads (its favicon) when we navigate on;
    # a 404 or a CSP block is caught above and by the console.
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}")
            if r.failure != "net::ERR_ABORTED" else None)
    page.on("response", lambda r: problems.append(f"{r.status}: {r.url}")
            if r.status >= 400 and r.request.resource_type != "document" else None)
    return page


def assert_brand(page: Any, issuer: str) -> None:
    """The operator's name and logo at the top (the logo really loaded: CSP allowed it), our favicon linked."""
    assert DISPLAY_NAME in page.inner_text("header"), page.url
    assert page.locator("header img.logo").count() == 1
    page.wait_for_function("[...document.querySelectorAll('header img.logo')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    assert page.evaluate("document.querySelector('link[rel=icon]').href") == f"{issuer}/static/favicon.svg"
    assert page.evaluate("""new Promise(done => { const icon = new Image();
        icon.onload = () => done(icon.naturalWidth > 0); icon.onerror = () => done(false);
        icon.src = document.querySelector('link[rel=icon]').href; })""")  # loads, under the page's CSP


def sign_in(page: Any, issuer: str, next_path: str, username: str, button: str = "Sign in") -> None:
    page.goto(f"{issuer}/login?{urlencode({'next': next_path})}")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{issuer}{next_path}")


def test_operator_and_person_in_chromium(db_url: str, db: Database) -> None:
    if not Path(CHROMIUM).exists():
        if REQUIRE_PG:
            pytest.fail(f"{CHROMIUM} is required in CI (AUTHSERVER_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with db.session() as s:
        users.create_user(s, "root", PASSWORD, ["admin"])
        users.create_user(s, "alice", PASSWORD)
    port = free_port()
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    problems: list[str] = []

    with serve(lambda base: create_app(make_settings(db_url, issuer=base, display_name=DISPLAY_NAME, logo_url=LOGO),
                                       db=db)) as issuer, \
            callback_server(port) as received, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            operator = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
            admin = watch(operator.new_page(), problems)
            sign_in(admin, issuer, "/admin", "root")
            assert_brand(admin, issuer)

            # A scope, a resource that allows it, and a confidential client for both.
            admin.goto(f"{issuer}/admin/scopes/new")
            admin.fill("#f-name", "read:notes")
            admin.fill("#f-description", "Read your notes")
            admin.get_by_role("button", name="Create scope").click()
            admin.wait_for_url(f"{issuer}/admin/scopes*")
            assert "read:notes" in admin.inner_text("main")
            admin.goto(f"{issuer}/admin/resources/new")
            admin.fill("#f-uri", RESOURCE)
            admin.fill("#f-name", "Notes MCP server")
            admin.check('input[name="scope"][value="read:notes"]')
            admin.get_by_role("button", name="Create resource").click()
            admin.wait_for_url(f"{issuer}/admin/resources*")
            admin.goto(f"{issuer}/admin/clients/new")
            admin.fill("#name", "Notes assistant")
            admin.fill("#redirect_uris", redirect_uri)
            admin.select_option("#auth_method", "client_secret_basic")
            admin.check('input[name="scope"][value="read:notes"]')
            admin.check(f'input[name="resource"][value="{RESOURCE}"]')
            admin.locator("form button[type=submit].primary").click()
            secret_box = admin.locator("#client-secret")
            secret_box.wait_for()
            secret = secret_box.inner_text().strip()
            client_id = admin.locator("main code").first.inner_text().strip()
            admin.get_by_role("button", name="Copy").click()
            admin.get_by_role("button", name="Copied").wait_for()
            assert admin.evaluate("navigator.clipboard.readText()") == secret
            assert len(secret) >= 40

            # The person authorizes it through the real pages.
            unknown_app = f"{issuer}/authorize?client_id=nobody"
            person = watch(browser.new_page(), problems, frozenset({unknown_app}))
            verifier, challenge = pkce_pair()
            authorize = f"{issuer}/authorize?" + urlencode({
                "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                "code_challenge": challenge, "code_challenge_method": "S256", "state": "st",
                "resource": RESOURCE, "scope": "read:notes"})
            person.goto(authorize)
            assert_brand(person, issuer)
            person.fill("#username", "alice")
            person.fill("#password", PASSWORD)
            person.get_by_role("button", name="Sign in").click()
            person.get_by_role("button", name="Allow").wait_for()
            assert_brand(person, issuer)
            consent = person.inner_text("main")
            assert "Notes assistant" in consent and "Notes MCP server" in consent and "Read your notes" in consent
            assert person.is_checked('input[name="scope"][value="offline_access"]')  # Stay connected
            person.get_by_role("button", name="Allow").click()
            person.wait_for_url(f"{redirect_uri}?*")
            code = received[-1]["code"][0]
            tokens = httpx.post(f"{issuer}/token", auth=(client_id, secret), timeout=10, data={
                "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                "redirect_uri": redirect_uri}).json()
            assert tokens["refresh_token"], tokens

            # The operator sees it: in the audit log and on the client's page.
            admin.goto(f"{issuer}/admin/audit?{urlencode({'client_id': client_id})}")
            log = admin.inner_text("main")
            assert "consent.granted" in log and "token.issued" in log and "alice" in log
            admin.goto(f"{issuer}/admin/clients")
            admin.get_by_role("link", name="Notes assistant").first.click()
            admin.wait_for_url(f"{issuer}/admin/clients/detail*")
            detail = admin.inner_text("main")
            assert client_id in detail and "consent.granted" in detail
            assert secret not in admin.content()

            # The person disconnects the app; the client's next refresh fails.
            person.goto(f"{issuer}/account")
            assert_brand(person, issuer)
            assert "Notes assistant" in person.inner_text("main")
            person.get_by_role("button", name="Disconnect").click()
            person.wait_for_url(f"{issuer}/account/disconnect*")
            person.get_by_role("button", name="Disconnect").click()
            person.wait_for_url(f"{issuer}/account")
            assert "can no longer use" in person.inner_text("main")
            refreshed = httpx.post(f"{issuer}/token", auth=(client_id, secret), timeout=10, data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
            assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"

            # The same consent page in Korean (the browser asks for it).
            korean = watch(browser.new_context(locale="ko-KR", extra_http_headers={
                "Accept-Language": "ko-KR,ko;q=0.9"}).new_page(), problems)
            korean.goto(authorize)
            korean.fill("#username", "alice")
            korean.fill("#password", PASSWORD)
            korean.get_by_role("button", name="로그인").click()
            korean.get_by_role("button", name="허용").wait_for()
            text = korean.inner_text("main")
            assert "Notes assistant" in text and "연결 유지" in text and "Read your notes" in text
            assert korean.locator("html").get_attribute("lang") == "ko"
            korean.get_by_role("link", name="English").click()
            korean.get_by_role("button", name="Allow").wait_for()

            # The pages outside a flow: /, an error page, and signing out and in again.
            person.goto(f"{issuer}/")
            assert_brand(person, issuer)
            assert "signed in as alice" in person.inner_text("main")
            assert person.goto(unknown_app).status == 400
            assert_brand(person, issuer)
            assert "nobody" in person.inner_text("dl.developer")
            person.goto(f"{issuer}/logout")
            assert_brand(person, issuer)
            person.get_by_role("button", name="Sign out").click()
            person.get_by_role("link", name="Sign in again").click()
            person.wait_for_url(f"{issuer}/login")
            assert_brand(person, issuer)
            person.goto(f"{issuer}/")
            person.get_by_role("link", name="Sign in").click()
            person.wait_for_url(f"{issuer}/login")
            icon = person.goto(f"{issuer}/favicon.ico")  # what browsers ask for beside JSON documents
            assert icon is not None and icon.ok and icon.headers["content-type"].startswith("image/svg+xml")
        finally:
            browser.close()
    assert problems == []
