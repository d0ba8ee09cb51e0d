"""Screenshots of the main pages for the README: ``make screenshots`` writes docs/screenshots/*.png.

Run from the repository root with it on the path, as ``make screenshots`` does
(``PYTHONPATH=. python docs/screenshots.py``). A real ``authserver`` app on a throw-away SQLite
database, seeded with a calendar MCP server, two apps and two people, is driven by Debian's
Chromium (Playwright, never a downloaded browser) through the real sign-in and consent pages;
each page is captured at desktop (1280x800) and phone (390x844) sizes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from authserver import migrate
from authserver.app import create_app
from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import Database, utcnow
from authserver.settings import Settings
from authserver.users import repository as users
from tests.live import serve

OUT = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
PASSWORD = "correct horse battery staple"
RESOURCE = "https://calendar.example.com/mcp"
CALLBACK_PATH = "/callback"
DISPLAY_NAME = "Example Health"  # AUTHSERVER_DISPLAY_NAME: who runs the server, on every page
LOGO = "/static/favicon.svg"  # AUTHSERVER_LOGO_URL: any file under templates/static
VERIFIER = secrets.token_urlsafe(48)
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


def seed(db: Database, callback: str) -> str:
    """The demo world; returns the desktop app's client_id."""
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar events")
        catalog.create_scope(s, "write:calendar", "Create, change and delete events in your calendar", write=True)
        catalog.create_scope(s, "read:contacts", "See the names and emails in your address book")
        catalog.create_resource(s, RESOURCE, "Calendar MCP server", ["read:calendar", "write:calendar"])
        catalog.create_resource(s, "https://contacts.example.com/mcp", "Contacts MCP server", ["read:contacts"])
        app = clients.create_client(s, clients.NewClient(
            name="Calendar assistant", redirect_uris=[callback], public=True,
            scopes=["read:calendar", "write:calendar"], resources=[RESOURCE]))
        clients.create_client(s, clients.NewClient(
            name="Calendar MCP server (introspection)", grant_types=["client_credentials"], resources=[RESOURCE],
            can_introspect=True))
        for n in range(3):
            clients.create_client(s, clients.NewClient(
                name=f"Claude Desktop (registered {n + 1})", redirect_uris=["http://127.0.0.1/callback"],
                public=True, kind="dynamic", verified=False))
        users.create_user(s, "admin", PASSWORD, ["admin"])
        users.create_user(s, "alice", PASSWORD)
        carol = users.create_user(s, "carol", PASSWORD)
        record(s, "login.failed", ip="203.0.113.7")
        # Someone guessed at carol's password until the lock engaged: her account page says so.
        record(s, "login.locked", actor=str(carol.id), ip="203.0.113.7", failures=10, username="carol")
        return app.client.client_id


def tool_calls(db: Database, client_id: str) -> None:
    with db.session() as s:
        alice = users.get_by_username(s, "alice")
        assert alice is not None
        now = utcnow().isoformat()
        for tool, outcome in (("list_events", "success"), ("create_event", "success")):
            record(s, "tool.called", actor=str(alice.id), client_id=client_id, ip="127.0.0.1",
                   outcome="success", tool=tool, tool_outcome=outcome, resource=RESOURCE, jti="demo",
                   reported_by="calendar-mcp", called_at=now)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="authserver-shots-"))
    url = f"sqlite:///{workdir / 'authserver.db'}"
    db = Database(url)
    migrate.upgrade(db)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with serve(lambda base: create_app(Settings(issuer=base, database_url=url, secret_key="s" * 48,
                                                    display_name=DISPLAY_NAME, logo_url=LOGO), db=db)) \
                as issuer, sync_playwright() as p:
            callback = f"{issuer}{CALLBACK_PATH}"  # any page of ours: the code lands in its query
            client_id = seed(db, callback)
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            shots = Shooter(browser, args.out)
            authorize = f"{issuer}/authorize?" + urlencode({
                "response_type": "code", "client_id": client_id, "redirect_uri": callback,
                "code_challenge": CHALLENGE, "code_challenge_method": "S256",
                "state": "s", "resource": RESOURCE, "scope": "read:calendar write:calendar"})
            # The person: the home page, sign-in and consent (English and Korean), then their account pages.
            person = shots.context("en-US")
            page = person.new_page()
            page.goto(f"{issuer}/")
            shots.take(page, "home")
            # An app asks to return somewhere it never registered: an error page, never a redirect.
            page.goto(f"{issuer}/authorize?" + urlencode({
                "response_type": "code", "client_id": client_id, "redirect_uri": "https://attacker.example/callback",
                "code_challenge": CHALLENGE, "code_challenge_method": "S256", "resource": RESOURCE}))
            shots.take(page, "error")
            page.goto(authorize)
            shots.take(page, "signin")
            page.fill("#username", "alice")
            page.fill("#password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Allow").wait_for()
            shots.take(page, "consent")
            korean = shots.context("ko-KR")
            kpage = korean.new_page()
            kpage.goto(f"{issuer}/login")
            kpage.fill("#username", "alice")
            kpage.fill("#password", PASSWORD)
            kpage.get_by_role("button", name="로그인").click()
            kpage.goto(authorize)
            kpage.get_by_role("button", name="허용").wait_for()
            shots.take(kpage, "consent-ko")
            page.get_by_role("button", name="Allow").click()
            page.wait_for_url(f"{callback}?*")
            code = parse_qs(urlsplit(page.url).query)["code"][0]
            httpx.post(f"{issuer}/token", data={  # the app uses its code: "last used" on the account page
                "grant_type": "authorization_code", "code": code, "code_verifier": VERIFIER,
                "redirect_uri": callback, "client_id": client_id}, timeout=10).raise_for_status()
            # The app runs on the person's own computer (a loopback redirect URI): a remembered
            # consent still asks for one click, since any local program could use its name.
            page.goto(authorize)
            page.get_by_role("button", name="Continue").wait_for()
            shots.take(page, "confirm")
            kpage.goto(authorize)
            kpage.get_by_role("button", name="계속").wait_for()
            shots.take(kpage, "confirm-ko")
            tool_calls(db, client_id)
            for name, path in (("account", "/account"), ("account-activity", "/account/activity")):
                page.goto(issuer + path)
                shots.take(page, name)
            for name, path in (("account-ko", "/account"), ("account-activity-ko", "/account/activity")):
                kpage.goto(issuer + path)
                shots.take(kpage, name)
            page.goto(f"{issuer}/logout")  # signing out asks first
            shots.take(page, "signout")
            # After a lock: the owner is told at their next sign-in.
            owner = shots.context("en-US").new_page()
            owner.goto(f"{issuer}/login?next=/account")
            owner.fill("#username", "carol")
            owner.fill("#password", PASSWORD)
            owner.get_by_role("button", name="Sign in").click()
            owner.wait_for_selector("#sign-in-paused")
            shots.take(owner, "account-paused")
            # The operator.
            operator = shots.context("en-US")
            admin = operator.new_page()
            admin.goto(f"{issuer}/login?next=/admin")
            admin.fill("#username", "admin")
            admin.fill("#password", PASSWORD)
            admin.get_by_role("button", name="Sign in").click()
            admin.wait_for_url(f"{issuer}/admin")
            shots.take(admin, "admin-dashboard")
            for name, path in (("admin-clients", "/admin/clients"), ("admin-audit", "/admin/audit")):
                admin.goto(issuer + path)
                shots.take(admin, name)
            admin.goto(f"{issuer}/admin/clients")
            admin.get_by_role("link", name="Calendar assistant").first.click()
            admin.wait_for_load_state()
            shots.take(admin, "admin-client")
            browser.close()
        print(f"wrote {len(shots.written)} screenshots to {args.out}")
    finally:
        db.dispose()
        shutil.rmtree(workdir, ignore_errors=True)


class Shooter:
    def __init__(self, browser: Any, out: Path) -> None:
        self.browser = browser
        self.out = out
        self.written: list[Path] = []

    def context(self, locale: str) -> Any:
        return self.browser.new_context(locale=locale, extra_http_headers={"Accept-Language": locale})

    def take(self, page: Any, name: str) -> None:
        """The page at each size; the same URL is reloaded at the other size (GET pages only)."""
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            path = self.out / f"{name}-{size}.png"
            page.screenshot(path=str(path), full_page=True)
            self.written.append(path)
        page.set_viewport_size({"width": SIZES["desktop"][0], "height": SIZES["desktop"][1]})


if __name__ == "__main__":
    main()
